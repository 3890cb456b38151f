"""A clinic's day compressed into minutes, as Locust users against the cluster's balancers.

Three kinds of user, in the proportions of a clinic's day:

- ``Modality``: sends each of the plan's studies once over DIMSE with DCMTK's ``storescu``
  (one association per study, to the DICOM balancer), as a CT scanner does at the end of an
  exam; when every study is sent it sends them again (the archive answers duplicates with
  success and keeps one copy), so a long soak keeps a steady ingest without a growing disk.
- ``Doctor``: opens studies as OHIF does: QIDO by PatientID, the study's series, each
  series' metadata, then every frame one request at a time.
- ``Patient``: downloads the ZIP of their exams through a download link.

Doctors and patients are Locust's ``FastHttpUser`` (geventhttpclient): on a machine of two
cores the load generator shares the CPU with the cluster, and it costs a fraction of what
``requests`` would.

This file imports no project code: it reads the plan :mod:`deploy.cluster.load` wrote (the
addresses, a bearer token, the studies, the links) from the file ``LOAD_PLAN`` names.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from locust import User, between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

PLAN: dict[str, Any] = json.loads(Path(os.environ["LOAD_PLAN"]).read_text())
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STORED = re.compile(r"Received Store Response \((Success|Warning)")
#: One shared queue of studies to send: each is sent once before any is sent again.
_TO_SEND = itertools.cycle(range(len(PLAN["send"])))
#: Which study a doctor opens, which link a patient follows: the same mix run after run.
pick = random.Random(7).choice  # noqa: S311 (not a secret)
AUTHORIZED = {"Authorization": f"Bearer {PLAN['token']}"}


class Modality(User):
    """A modality at the end of each exam: one association carrying the whole study."""

    weight = PLAN["weights"]["modality"]
    wait_time = between(*PLAN["waits"]["modality"])

    @task
    def send_study(self) -> None:
        n = next(_TO_SEND)
        paths = PLAN["send"][n]
        argv = [*PLAN["storescu"], *paths]
        started = time.perf_counter()
        exception: Exception | None = None
        try:  # locust's gevent patches subprocess: the other users go on meanwhile
            result = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                    env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"})
            answered = len(STORED.findall(result.stdout + result.stderr))
            if result.returncode != 0 or answered != len(paths):
                exception = RuntimeError(f"storescu exit {result.returncode}, "
                                         f"{answered} of {len(paths)} stored")
        except subprocess.TimeoutExpired as timeout:
            exception = timeout
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="DIMSE", name="C-STORE study",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=PLAN["send_bytes"][n], exception=exception, context={})


class Doctor(FastHttpUser):
    """A radiologist opening studies in OHIF, one after another, reading each a while."""

    weight = PLAN["weights"]["doctor"]
    wait_time = between(*PLAN["waits"]["doctor"])

    @task
    def open_study(self) -> None:
        patient = pick(PLAN["patients"])
        found = self._json(f"/dicomweb/studies?PatientID={quote(patient['patient_id'])}",
                           "QIDO studies by PatientID")
        if not found:
            return
        study = pick(found)["0020000D"]["Value"][0]
        series = self._json(f"/dicomweb/studies/{study}/series", "QIDO series of a study")
        for one in series or []:
            uid = one["0020000E"]["Value"][0]
            base = f"/dicomweb/studies/{study}/series/{uid}"
            metadata = self._json(f"{base}/metadata", "WADO-RS series metadata")
            for instance in metadata or []:
                sop = instance["00080018"]["Value"][0]
                with self.client.get(f"{base}/instances/{sop}/frames/1",
                                     headers={"Accept": FRAME_ACCEPT, **AUTHORIZED},
                                     name="WADO-RS frame (one by one)",
                                     catch_response=True) as response:
                    if response.status_code != 200 or not response.content:
                        response.failure(f"{response.status_code}")

    def _json(self, path: str, name: str) -> Any:
        with self.client.get(path, name=name, catch_response=True,
                             headers={"Accept": "application/dicom+json", **AUTHORIZED},
                             ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            return response.json()


class Patient(FastHttpUser):
    """A patient fetching their exams' images through the link the clinic sent."""

    weight = PLAN["weights"]["patient"]
    wait_time = between(*PLAN["waits"]["patient"])

    @task
    def download(self) -> None:
        if not PLAN["links"]:
            raise StopUser()
        link = pick(PLAN["links"])
        started = time.perf_counter()
        with self.client.get(f"/s/{link}/download", name="patient ZIP download",
                             stream=True, catch_response=True) as response:
            chunks = response.iter_content(1 << 16, decode_content=False)
            size = sum(len(chunk) for chunk in chunks)
            if response.status_code != 200 or size == 0:
                response.failure(f"{response.status_code}, {size} bytes")
            # Streamed, Locust would time only the first byte and take the length from a
            # header: the whole ZIP, received, is what a patient waits for.
            response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            response.request_meta["response_length"] = size
