"""``manage.py dicom_peers add|list|remove``: configure DICOM peers from scripts.

    manage.py dicom_peers add CT01 10.0.0.21 104 --store
    manage.py dicom_peers add WORKSTATION 10.0.0.40 11112 --query --retrieve
    manage.py dicom_peers add US02 10.0.0.52 --store --clinic "Clínica Sul"
    manage.py dicom_peers list
    manage.py dicom_peers remove CT01

``add`` on an existing AE title updates it, so install scripts can run it again.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Clinic
from dimse.models import Peer


class Command(BaseCommand):
    help = "Add, list or remove the DICOM peers the listener accepts."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add or update a peer")
        add.add_argument("ae_title")
        add.add_argument("host")
        add.add_argument("port", type=int, nargs="?", default=None,
                         help="where it receives C-STORE (needed as a C-MOVE destination)")
        add.add_argument("--store", action="store_true", help="may send objects (C-STORE)")
        add.add_argument("--query", action="store_true", help="may query (C-FIND)")
        add.add_argument("--retrieve", action="store_true",
                         help="may retrieve (C-GET, C-MOVE)")
        add.add_argument("--disabled", action="store_true", help="configured but refused")
        add.add_argument("--description", default="")
        add.add_argument("--clinic", default=None,
                         help="bind the peer to this clinic (name): it stores into, finds "
                              "and retrieves that clinic's patients only; \"\" unbinds it")
        sub.add_parser("list", help="list the peers")
        remove = sub.add_parser("remove", help="remove a peer")
        remove.add_argument("ae_title")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            self._add(options)
        elif action == "list":
            self._list()
        else:
            deleted, _ = Peer.objects.filter(ae_title=options["ae_title"].strip()).delete()
            if not deleted:
                raise CommandError(f"no peer with AE title {options['ae_title']!r}")
            self.stdout.write(f"removed {options['ae_title']}")

    def _add(self, options: dict[str, Any]) -> None:
        ae_title = options["ae_title"].strip()
        peer = Peer.objects.filter(ae_title=ae_title).first() or Peer(ae_title=ae_title)
        created = peer.pk is None
        peer.host = options["host"]
        peer.port = options["port"]
        peer.may_store = options["store"]
        peer.may_query = options["query"]
        peer.may_retrieve = options["retrieve"]
        peer.enabled = not options["disabled"]
        peer.description = options["description"] or peer.description
        if options["clinic"] is not None:
            peer.clinic = self._clinic(options["clinic"])
        try:
            peer.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )) from exc
        peer.save()
        self.stdout.write(f"{'added' if created else 'updated'} {self._line(peer)}")

    @staticmethod
    def _clinic(name: str) -> Clinic | None:
        if not name.strip():
            return None
        clinic = Clinic.objects.filter(name=name.strip()).first()
        if clinic is None:
            known = ", ".join(Clinic.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no clinic named {name!r} (clinics: {known})")
        return clinic

    def _list(self) -> None:
        for peer in Peer.objects.all():
            self.stdout.write(self._line(peer))

    @staticmethod
    def _line(peer: Peer) -> str:
        may = [name for name, flag in (("store", peer.may_store), ("query", peer.may_query),
                                       ("retrieve", peer.may_retrieve)) if flag]
        state = "" if peer.enabled else " (disabled)"
        clinic = peer.clinic.name if peer.clinic else "all clinics"
        return (f"{peer.ae_title}\t{peer.host}\t{peer.port or '-'}\t"
                f"{','.join(may) or 'none'}{state}\t{clinic}")
