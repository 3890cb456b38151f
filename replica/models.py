"""Where each stored object's copies are: one row per instance and tier.

The instance row says what the object is; a copy row says that a tier holds it, under which
key, with which hash, and when that was last proven by reading it back. A replica copy also
keeps its envelope (the wrapped data key and the nonce layout): without it the object
cannot be decrypted.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from imaging.models import Instance


class Copy(models.Model):
    class Tier(models.TextChoices):
        LOCAL = "local", _("Local")
        REPLICA = "replica", _("Replica")

    class State(models.TextChoices):
        PENDING = "pending", pgettext_lazy("copy state", "Pending")
        WRITTEN = "written", pgettext_lazy("copy state", "Written")
        VERIFIED = "verified", pgettext_lazy("copy state", "Verified")
        FAILED = "failed", pgettext_lazy("copy state", "Failed")
        # Local tier only: the file was deleted because the replica holds a verified copy;
        # a read recalls it (replica.recall).
        EVICTED = "evicted", pgettext_lazy("copy state", "Evicted")

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="copies",
                                 verbose_name=_("instance"))
    tier = models.CharField(_("tier"), max_length=16, choices=Tier.choices)
    # A replica copy's key is random, chosen by the upload attempt that wrote it (empty
    # until then): never a UID, a name or the content's hash.
    key = models.CharField(_("object key"), max_length=256, blank=True)
    # The key of the upload attempt in flight, set before its first byte is sent: a worker
    # killed between its upload and recording it leaves that object behind, and the next
    # attempt deletes it.
    attempt_key = models.CharField(_("object key of the last attempt"), max_length=256,
                                   blank=True, default="")
    state = models.CharField(_("state"), max_length=16, choices=State.choices,
                             default=State.PENDING)
    # SHA-256 of the plaintext written (the instance's own bytes, never the ciphertext's).
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    size = models.PositiveBigIntegerField(_("size (bytes)"), null=True, blank=True)
    # The envelope of a replica copy (replica.crypto.Envelope).
    key_id = models.CharField(_("key id"), max_length=64, blank=True)
    wrapped_key = models.BinaryField(_("wrapped data key"), default=b"", blank=True)
    nonce_prefix = models.BinaryField(_("nonce prefix"), default=b"", blank=True)
    segment_size = models.PositiveIntegerField(_("segment size"), null=True, blank=True)
    # How the replica object's plaintext was packed before encryption (replica.payload):
    # empty for the instance's own bytes (every copy written before packing existed).
    packing = models.CharField(_("packing"), max_length=32, blank=True, default="")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    # Of a local copy: when it was stored or last recalled (eviction by age counts from it).
    written_at = models.DateTimeField(_("written"), null=True, blank=True)
    verified_at = models.DateTimeField(_("verified"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    # A worker holds the copy until then; after a failure, the earliest next attempt.
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    # The backlog drain queued a task for the copy; it queues none again before then (the
    # broker gives a dead worker's task back within its visibility timeout), so an outage
    # of hours leaves one task per copy in the queue, not one per sweep.
    queued_until = models.DateTimeField(_("queued until"), null=True, blank=True)

    class Meta:
        verbose_name = _("copy")
        verbose_name_plural = _("copies")
        constraints = [
            models.UniqueConstraint(fields=["instance", "tier"], name="replica_copy_one_per_tier"),
        ]
        indexes = [
            models.Index(fields=["tier", "state", "claimed_until"], name="replica_copy_backlog"),
            models.Index(fields=["tier", "state", "created"], name="replica_copy_lag"),
        ]

    def __str__(self) -> str:
        return f"{self.tier}:{self.key}"


class DrillReport(models.Model):
    """One restore drill: a sample of studies brought back from the replica and checked
    byte for byte. Only a drill proves the replica can be restored from; a copy marked
    verified says it could be read once, when it was written."""

    started = models.DateTimeField(_("started"), db_index=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    studies = models.PositiveIntegerField(_("studies"), default=0)
    objects_checked = models.PositiveIntegerField(_("objects"), default=0)
    bytes_checked = models.PositiveBigIntegerField(_("bytes"), default=0)
    seconds = models.FloatField(_("seconds"), default=0.0)
    failure_count = models.PositiveIntegerField(_("failures"), default=0)
    # [{"instance": id, "copy": id, "key": object key, "reason": text}, ...], the first
    # MAX_LISTED of them (failure_count counts them all).
    failures = models.JSONField(_("failed objects"), default=list, blank=True)
    ok = models.BooleanField(_("succeeded"), default=False)

    class Meta:
        verbose_name = _("restore drill")
        verbose_name_plural = _("restore drills")
        ordering = ["-started"]

    def __str__(self) -> str:
        return f"{self.started:%Y-%m-%d %H:%M} {'ok' if self.ok else 'failed'}"


class IntegrityAlert(models.Model):
    """A copy found missing or not holding the instance's bytes, and what was done about it.

    One open alert per instance and tier: a check that finds the same damage again updates
    it instead of opening another (and e-mailing again). ``repaired_at`` stays empty while no
    good copy could be written in its place; ``detail`` then says why.
    """

    class Kind(models.TextChoices):
        MISSING = "missing", pgettext_lazy("integrity problem", "Missing")
        MISMATCH = "mismatch", pgettext_lazy("integrity problem", "Content changed")
        UNDECRYPTABLE = "undecryptable", pgettext_lazy("integrity problem", "Cannot decrypt")

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE,
                                 related_name="integrity_alerts", verbose_name=_("instance"))
    tier = models.CharField(_("tier"), max_length=16, choices=Copy.Tier.choices)
    kind = models.CharField(_("problem"), max_length=16, choices=Kind.choices)
    detail = models.TextField(_("detail"), blank=True)
    found_at = models.DateTimeField(_("found"), auto_now_add=True)
    repaired_at = models.DateTimeField(_("repaired"), null=True, blank=True)
    # The tier the good bytes came from (blank until repaired).
    repaired_from = models.CharField(_("repaired from"), max_length=16, blank=True,
                                     choices=Copy.Tier.choices)

    class Meta:
        verbose_name = _("integrity alert")
        verbose_name_plural = _("integrity alerts")
        ordering = ["-found_at"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "tier"],
                                    condition=models.Q(repaired_at__isnull=True),
                                    name="replica_alert_one_open_per_tier"),
        ]

    def __str__(self) -> str:
        return f"{self.tier}:{self.kind} (instance {self.instance_id})"
