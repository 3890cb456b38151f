"""The access audit trail: append-only, each entry hash-chained to the one before."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditAction(models.TextChoices):
    VIEW = "view", _("view")
    SEARCH = "search", _("search")
    DOWNLOAD = "download", _("download")
    RETRIEVE = "retrieve", _("retrieve")
    STORE = "store", _("store")
    SHARE = "share", _("share")
    EXPORT = "export", _("export")
    DELETE = "delete", _("delete")
    BREAK_GLASS = "break_glass", _("break the glass")
    ASSOCIATION = "association", _("DICOM association")
    LOGIN = "login", _("login")
    TOKEN = "token", _("API token")
    REPORT = "report", _("report")
    REPAIR = "repair", _("repair of a stored copy")
    KEY_ROTATION = "key_rotation", _("replica key rotation")
    REJECT = "reject", _("rejection of instances (IOCM)")
    UNDO_REJECTION = "undo_rejection", _("undoing a rejection")


class Outcome(models.TextChoices):
    ALLOWED = "allowed", _("allowed")
    DENIED = "denied", _("denied")
    FAILED = "failed", _("failed")


class AuditEvent(models.Model):
    """One access to patient data (or an attempt). Never updated or deleted.

    ``entry_hash`` is SHA-256 over the previous entry's hash and this entry's canonical
    fields (see ``audit.chain``), so any change to a past entry breaks every link after it.
    """

    seq = models.PositiveBigIntegerField(_("sequence"), unique=True)
    at = models.DateTimeField(_("when"), db_index=True)
    # The actor's id as a plain integer, not a foreign key: deleting a user must never
    # rewrite chained entries (users on the trail are deactivated instead, audit.actors).
    # The column is still ``user_id``, the foreign key's column before migration 0003.
    user_pk = models.BigIntegerField(_("user"), null=True, blank=True, db_index=True,
                                     db_column="user_id")
    username = models.CharField(_("who"), max_length=150, blank=True)
    role = models.CharField(_("role"), max_length=32, blank=True)
    peer_ae = models.CharField(_("peer AE title"), max_length=16, blank=True)
    ip = models.CharField(_("from (IP)"), max_length=64, blank=True)
    client = models.CharField(_("user agent or host"), max_length=256, blank=True)
    action = models.CharField(_("action"), max_length=16, choices=AuditAction.choices,
                              db_index=True)
    outcome = models.CharField(_("outcome"), max_length=8, choices=Outcome.choices)
    level = models.CharField(_("object level"), max_length=16, blank=True)
    object_uid = models.CharField(_("object"), max_length=128, blank=True, db_index=True)
    # Kept as plain values, not foreign keys: the trail outlives purged patients.
    patient_pk = models.BigIntegerField(_("patient"), null=True, blank=True, db_index=True)
    patient_ref = models.CharField(_("patient ID"), max_length=140, blank=True)
    study_uid = models.CharField(_("study"), max_length=64, blank=True, db_index=True)
    break_glass = models.BooleanField(_("break the glass"), default=False, db_index=True)
    reason = models.TextField(_("reason"), blank=True)
    detail: models.JSONField[Any, Any] = models.JSONField(_("detail"), default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-seq"]
        indexes = [models.Index(fields=["patient_pk", "at"])]

    def __str__(self) -> str:
        who = self.username or self.peer_ae
        return f"#{self.seq} {self.at:%Y-%m-%d %H:%M:%S} {who} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("audit events are append-only")


class ChainHead(models.Model):
    """One row: the last sequence number and hash, locked while an entry is appended.

    ``signature`` is the HMAC of (seq, entry_hash) under ``AUDIT_CHAIN_KEY``, a key the
    database does not hold: a chain rebuilt with correct SHA-256 links but without the key
    does not match it (see ``audit.chain.sign``).
    """

    seq = models.PositiveBigIntegerField(default=0)
    entry_hash = models.CharField(max_length=64, default="0" * 64)
    signature = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"audit chain head at {self.seq}"


class AuditCheckpoint(models.Model):
    """The chain's hash at every ``audit.chain.CHECKPOINT_EVERY``-th entry, signed with the
    chain key, so verification can say how far back a rebuilt chain differs."""

    seq = models.PositiveBigIntegerField(unique=True)
    entry_hash = models.CharField(max_length=64)
    signature = models.CharField(max_length=64)
    at = models.DateTimeField()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"audit checkpoint at {self.seq}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("audit checkpoints are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("audit checkpoints are append-only")


class ReadSession(models.Model):
    """Reads of one study by one caller, counted between two chained entries.

    The first read writes a chained entry (``opened_seq``) and this row; later reads within
    ``AUDIT_READ_SESSION_SECONDS`` of the last one only add to ``reads`` and ``last_read``
    here, without the chain lock. When the session closes (the next read after the window,
    or ``manage.py close_read_sessions``) its final count is written as a chained entry
    (``closed_seq``), which makes the total tamper-evident. See ``audit.read_sessions``.
    """

    caller = models.CharField(_("caller"), max_length=200)
    action = models.CharField(_("action"), max_length=16, choices=AuditAction.choices)
    study_uid = models.CharField(_("study"), max_length=64)
    patient_pk = models.BigIntegerField(_("patient"), null=True, blank=True, db_index=True)
    patient_ref = models.CharField(_("patient ID"), max_length=140, blank=True)
    user_pk = models.BigIntegerField(_("user"), null=True, blank=True)
    username = models.CharField(_("who"), max_length=150, blank=True)
    role = models.CharField(_("role"), max_length=32, blank=True)
    peer_ae = models.CharField(_("peer AE title"), max_length=16, blank=True)
    ip = models.CharField(_("from (IP)"), max_length=64, blank=True)
    client = models.CharField(_("user agent or host"), max_length=256, blank=True)
    opened = models.DateTimeField(_("opened"))
    last_read = models.DateTimeField(_("last read"), db_index=True)
    reads = models.PositiveIntegerField(_("reads"), default=1)
    opened_seq = models.PositiveBigIntegerField(_("opening entry"), db_index=True)
    closed_seq = models.PositiveBigIntegerField(_("closing entry"), null=True, blank=True)

    class Meta:
        verbose_name = _("viewing session")
        verbose_name_plural = _("viewing sessions")
        ordering = ["-last_read"]
        constraints = [
            models.UniqueConstraint(fields=["caller", "action", "study_uid"],
                                    condition=models.Q(closed_seq__isnull=True),
                                    name="audit_one_open_read_session"),
        ]

    def __str__(self) -> str:
        who = self.username or self.peer_ae or self.caller
        return f"{who} {self.study_uid} ({self.reads} reads)"
