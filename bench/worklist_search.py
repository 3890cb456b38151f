"""The worklist's searches at archive scale, on PostgreSQL: p50 and p95 per search kind.

    .venv/bin/python bench/worklist_search.py [--studies 100000] [--runs 20]
        [--postgres postgres://postgres@127.0.0.1:5432] [--keep]

Creates the database ``portal_bench_worklist`` on the server of ``--postgres`` (dropped
first if a previous run left it, and at the end unless ``--keep``), migrates it, and fills
it with bulk SQL (``INSERT ... SELECT generate_series``, no ORM, no DICOM files): five
clinics, ``studies / 2.5`` patients with Brazilian names (accents, ``^`` between family and
given names in half of them), ``--studies`` studies over ten years with their modalities,
body parts, referring physicians and report statuses, two series a study and five instances
a series (1,000,000 instances for 100,000 studies). Then, as a doctor with grants on about
a tenth of her clinic's patients and as that clinic's admin, every search kind is run
``--runs`` times through :func:`imaging.worklist.search` (parse, the policy's queryset, the
capped count and the page of 50), and the commonest ones also through the page itself
(Django's test client: middleware, view, audit entry and template). Prints ms p50 [p95].

Orthanc is not compared: loading it with a million instances takes hours over its REST API.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATABASE = "portal_bench_worklist"
CLINICS = ["Clínica Sul", "Clínica Norte", "Hospital São Lucas", "Centro de Imagem Araújo",
           "Clínica Conceição"]
GIVEN = ["JOSÉ", "JOÃO", "ANTÔNIO", "FRANCISCO", "CARLOS", "PAULO", "PEDRO", "LUCAS", "LUÍS",
         "MARCOS", "GABRIEL", "RAFAEL", "DANIEL", "MARCELO", "BRUNO", "EDUARDO", "FELIPE",
         "RAIMUNDO", "RODRIGO", "MANOEL", "MARIA", "ANA", "FRANCISCA", "ANTÔNIA", "ADRIANA",
         "JULIANA", "MÁRCIA", "FERNANDA", "PATRÍCIA", "ALINE", "SANDRA", "CAMILA", "AMANDA",
         "BRUNA", "JÉSSICA", "LETÍCIA", "JÚLIA", "LUCIANA", "VANESSA", "MÔNICA", "CONCEIÇÃO",
         "INÊS", "CÉLIA", "GLÓRIA", "SÉRGIO", "FÁBIO", "MÁRIO", "CÁSSIO", "HÉLIO", "VINÍCIUS",
         "CAIO", "OTÁVIO", "ÍCARO", "ÉRICA", "ÂNGELA", "ESTÊVÃO"]
FAMILY = ["SILVA", "SANTOS", "OLIVEIRA", "SOUZA", "RODRIGUES", "FERREIRA", "ALVES", "PEREIRA",
          "LIMA", "GOMES", "COSTA", "RIBEIRO", "MARTINS", "CARVALHO", "ALMEIDA", "LOPES",
          "SOARES", "FERNANDES", "VIEIRA", "BARBOSA", "ROCHA", "DIAS", "NASCIMENTO",
          "ANDRADE", "MOREIRA", "NUNES", "MARQUES", "MACHADO", "MENDES", "FREITAS", "CARDOSO",
          "RAMOS", "GONÇALVES", "SANTANA", "TEIXEIRA", "ARAÚJO", "CONCEIÇÃO", "BRANDÃO",
          "FALCÃO", "GUSMÃO", "ROMÃO", "DAMIÃO", "ASSUNÇÃO", "PIMENTEL", "CAVALCANTI",
          "BEZERRA", "MAGALHÃES", "SIMÕES", "GUIMARÃES", "LEÃO", "ESPÍRITO SANTO", "AZEVÊDO"]
LINKS = ["DA", "DOS", "DE", "DAS", ""]
# (modalities, description, weight): CT and MR most, mammography and nuclear medicine rare.
KINDS = [("CT", "TC TÓRAX", 20), ("CT\\SR", "TC CRÂNIO", 8), ("MR", "RM JOELHO", 14),
         ("MR\\SR", "RM COLUNA LOMBAR", 4), ("CR", "RX TÓRAX PA", 18), ("DX", "RX MÃO", 8),
         ("US", "US ABDOME TOTAL", 14), ("MG", "MAMOGRAFIA BILATERAL", 5),
         ("CT\\PT", "PET-CT", 2), ("NM", "CINTILOGRAFIA ÓSSEA", 2), ("XA", "CATETERISMO", 1),
         ("OT", "OUTROS", 4)]
PARTS = [("CHEST", 25), ("HEAD", 12), ("ABDOMEN", 14), ("KNEE", 8), ("LSPINE", 6),
         ("PELVIS", 6), ("BREAST", 5), ("SHOULDER", 4), ("HAND", 4), ("ABDOMEN\\PELVIS", 6),
         ("CHEST\\ABDOMEN", 5), ("FOOT", 2), ("NECK", 3)]
STATUSES = [("none", 30), ("preliminary", 10), ("final", 60)]


def _weighted(items: list[tuple[Any, ...]]) -> list[Any]:
    """Each item repeated by its weight (last element), for a uniform pick by index."""
    return [item[:-1] if len(item) > 2 else item[0] for item in items
            for _ in range(item[-1])]


def server_database(url: str, database: str = DATABASE) -> tuple[str, Callable[[], None]]:
    """A fresh, empty ``database`` on the server of ``url`` (dropped first if a previous run
    left it): its URL, and the function that drops it."""
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{database}")), drop


def fill(studies: int) -> dict[str, Any]:
    """The archive, by bulk SQL; returns what the searches need (users, known values)."""
    from django.db import connection

    from accounts.models import Clinic, Role, User
    from imaging.search_text import searchable

    clinics = [Clinic.objects.create(name=name).pk for name in CLINICS]
    patients = max(1, int(studies / 2.5))
    kinds = _weighted(KINDS)
    parts = _weighted(PARTS)
    statuses = _weighted(STATUSES)
    # Referring physicians: 60 of them, "DR(A)^GIVEN FAMILY" as RIS systems send them.
    doctors = [f"{FAMILY[(i * 7) % len(FAMILY)]}^{GIVEN[(i * 11) % len(GIVEN)]}"
               for i in range(60)]
    clinic_weights = [0.3, 0.25, 0.2, 0.15, 0.1]
    trigram = importlib.import_module("imaging.migrations.0006_worklist_search_fill")
    with connection.cursor() as cursor:
        # As for any bulk load: the GIN indexes built once afterwards, not row by row.
        for name, _table, _column in trigram.TRIGRAM_INDEXES:
            cursor.execute(f"DROP INDEX {name}")
        cursor.execute("SELECT setseed(0.17)")
        started = time.perf_counter()
        # Patient names: half "FAMILY^GIVEN LINK", half "GIVEN LINK FAMILY FAMILY" (one
        # component), each built twice from the same picks: as stored and as searched.
        cursor.execute("""
            INSERT INTO imaging_patient (patient_id, issuer, name, name_search, birth_date,
                                         sex, clinic_id, created)
            SELECT 'P' || lpad(i::text, 8, '0'), '',
                   CASE WHEN i %% 2 = 0
                        THEN f1[a] || '^' || g1[b] || ' ' || g1[c]
                        ELSE g1[b] || ' ' || l[d] || ' ' || f1[a] || ' ' || f1[e] END,
                   CASE WHEN i %% 2 = 0
                        THEN f2[a] || ' ' || g2[b] || ' ' || g2[c]
                        ELSE g2[b] || ' ' || l[d] || ' ' || f2[a] || ' ' || f2[e] END,
                   DATE '1935-01-01' + (random() * 32000)::int,
                   CASE WHEN random() < 0.52 THEN 'F' ELSE 'M' END,
                   CASE WHEN r < %(w1)s THEN %(c1)s WHEN r < %(w2)s THEN %(c2)s
                        WHEN r < %(w3)s THEN %(c3)s WHEN r < %(w4)s THEN %(c4)s
                        ELSE %(c5)s END,
                   now()
            FROM (SELECT i, random() AS r,
                         1 + (random() * (cardinality(%(f1)s::text[]) - 1))::int AS a,
                         1 + (random() * (cardinality(%(g1)s::text[]) - 1))::int AS b,
                         1 + (random() * (cardinality(%(g1)s::text[]) - 1))::int AS c,
                         1 + (random() * (cardinality(%(l)s::text[]) - 1))::int AS d,
                         1 + (random() * (cardinality(%(f1)s::text[]) - 1))::int AS e,
                         %(f1)s::text[] AS f1, %(f2)s::text[] AS f2,
                         %(g1)s::text[] AS g1, %(g2)s::text[] AS g2, %(l)s::text[] AS l
                  FROM generate_series(1, %(n)s) AS i) AS picks
        """, {
            "n": patients, "f1": FAMILY, "f2": [searchable(x) for x in FAMILY],
            "g1": GIVEN, "g2": [searchable(x) for x in GIVEN], "l": LINKS,
            **{f"c{k + 1}": clinics[k] for k in range(5)},
            **{f"w{k + 1}": sum(clinic_weights[:k + 1]) for k in range(4)},
        })
        cursor.execute("UPDATE imaging_patient SET name = regexp_replace(name, ' +', ' ', 'g'),"
                       " name_search = regexp_replace(name_search, ' +', ' ', 'g')")
        cursor.execute("SELECT min(id), max(id) FROM imaging_patient")
        low, high = cursor.fetchone()
        cursor.execute("""
            INSERT INTO imaging_study (study_instance_uid, patient_id, study_date, study_time,
                accession_number, study_id, description, referring_physician,
                referring_physician_search, institution, modalities, body_parts, num_series,
                num_instances, size_bytes, report_status, rejected_instances, created,
                updated)
            SELECT '1.2.826.0.1.3680043.10.1.' || i, %(low)s + (random() * (%(span)s))::int,
                   CASE WHEN i %% 500 = 0 THEN NULL
                        ELSE DATE '2016-01-01' + (random() * 3652)::int END,
                   lpad((random() * 235959)::int::text, 6, '0'),
                   'A' || lpad(i::text, 9, '0'), (i %% 10000)::text,
                   (%(descs)s::text[])[k], (%(docs)s::text[])[dr], (%(docs2)s::text[])[dr],
                   'BENCH', (%(mods)s::text[])[k], (%(parts)s::text[])[p], 2, 10, 5242880,
                   (%(statuses)s::text[])[s], 0, now(), now()
            FROM (SELECT i,
                         1 + (random() * (cardinality(%(mods)s::text[]) - 1))::int AS k,
                         1 + (random() * (cardinality(%(parts)s::text[]) - 1))::int AS p,
                         1 + (random() * (cardinality(%(docs)s::text[]) - 1))::int AS dr,
                         1 + (random() * (cardinality(%(statuses)s::text[]) - 1))::int AS s
                  FROM generate_series(1, %(n)s) AS i) AS picks
        """, {
            "n": studies, "low": low, "span": high - low,
            "mods": [k[0] for k in kinds], "descs": [k[1] for k in kinds],
            "parts": parts, "docs": doctors, "docs2": [searchable(d) for d in doctors],
            "statuses": statuses,
        })
        cursor.execute("""
            INSERT INTO imaging_series (series_instance_uid, study_id, modality, series_number,
                description, body_part, series_date, num_instances, size_bytes,
                rejected_instances, created)
            SELECT t.study_instance_uid || '.' || n, t.id,
                   split_part(t.modalities, E'\\\\', 1), n, 'SERIE ' || n,
                   coalesce(nullif(split_part(t.body_parts, E'\\\\', n), ''),
                            split_part(t.body_parts, E'\\\\', 1)),
                   t.study_date, 5, 2621440, 0, now()
            FROM imaging_study t CROSS JOIN generate_series(1, 2) AS n
        """)
        cursor.execute("""
            INSERT INTO imaging_instance (sop_instance_uid, series_id, sop_class_uid,
                instance_number, transfer_syntax_uid, number_of_frames, rows, columns,
                blob_key, sha256, size_bytes, has_file_meta, metadata, received, source)
            SELECT s.series_instance_uid || '.' || j, s.id, '1.2.840.10008.5.1.4.1.1.2', j,
                   '1.2.840.10008.1.2.1', 1, 512, 512, md5(s.id || '.' || j),
                   md5(s.id || '.' || j) || md5(j || '.' || s.id), 524288, true, '{}'::jsonb,
                   now(), 'bench'
            FROM imaging_series s CROSS JOIN generate_series(1, 5) AS j
        """)
        for name, table, column in trigram.TRIGRAM_INDEXES:
            cursor.execute(f'CREATE INDEX {name} ON {table} USING gin ("{column}" gin_trgm_ops)')
        filled = time.perf_counter() - started
        doctor = User.objects.create_user("bench_doctor", role=Role.DOCTOR,
                                          first_name="Dora", last_name="Bench")
        doctor.clinics.add(clinics[0])
        admin = User.objects.create_user("bench_admin", role=Role.ADMIN, is_staff=True)
        admin.clinics.add(clinics[0])
        # The doctor's care relationships: a tenth of her clinic's patients.
        cursor.execute("""
            INSERT INTO accounts_accessgrant (doctor_id, patient_id, clinic_id, kind, starts,
                                              reason, created)
            SELECT %s, id, clinic_id, 'care', now() - interval '1 day', '', now()
            FROM imaging_patient WHERE clinic_id = %s AND random() < 0.1
        """, [doctor.pk, clinics[0]])
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM imaging_instance")
        instances = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM accounts_accessgrant")
        grants = cursor.fetchone()[0]
        # Values a user would type: an ID and an accession the doctor may see.
        cursor.execute("""
            SELECT p.patient_id, t.accession_number FROM accounts_accessgrant g
            JOIN imaging_patient p ON p.id = g.patient_id
            JOIN imaging_study t ON t.patient_id = p.id ORDER BY g.id LIMIT 1
        """)
        patient_id, accession = cursor.fetchone()
    print(f"filled {studies} studies, {patients} patients, {instances} instances in "
          f"{filled:.0f} s; the doctor has {grants} grants", flush=True)
    return {"doctor": doctor, "admin": admin, "clinic": clinics[0], "patient_id": patient_id,
            "accession": accession}


def searches(known: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [
        ("everything, newest first", {}),
        ("name part (conceição)", {"name": "conceição"}),
        ("name part, no accents (joao)", {"name": "joao"}),
        ("name, two parts (maria silva)", {"name": "maria silva"}),
        ("name part, rare (gusmao)", {"name": "gusmao"}),
        ("quick box (falcao)", {"q": "falcao"}),
        ("patient ID", {"patient_id": known["patient_id"]}),
        ("accession", {"accession": known["accession"]}),
        ("date range (a month)", {"date_from": "2023-03-01", "date_to": "2023-03-31"}),
        ("modality CT (common)", {"modality": "CT"}),
        ("modality XA (rare)", {"modality": "XA"}),
        ("body part KNEE", {"body_part": "KNEE"}),
        ("referring physician (cavalcanti)", {"referring": "cavalcanti"}),
        ("clinic", {"clinic": str(known["clinic"])}),
        ("report status preliminary", {"report_status": "preliminary"}),
        ("combination", {"name": "maria", "modality": "CT", "date_from": "2020-01-01",
                         "date_to": "2024-12-31", "report_status": "final"}),
        ("sort oldest first", {"sort": "date"}),
        ("sort patient name", {"sort": "name"}),
        ("sort patient name, Z to A", {"sort": "-name"}),
        ("sort patient ID", {"sort": "patient_id"}),
        ("sort accession, reversed", {"sort": "-accession"}),
        ("sort modality", {"sort": "modality"}),
        ("page 10", {"page": "10"}),
        ("name part sorted by name", {"name": "santos", "sort": "name"}),
    ]


def _percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
    return statistics.median(times), p95


def page_times(user: Any, params: dict[str, str], runs: int) -> tuple[float, float]:
    """ms p50 and p95 of the worklist page for ``user`` (Django's test client: session,
    middleware, view, audit entry, template), ``runs`` times after two warm-ups."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    times = []
    for attempt in range(runs + 2):
        start = time.perf_counter()
        response = client.get("/imaging/", params, HTTP_ACCEPT_LANGUAGE="pt-br")
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, response.status_code
        if attempt >= 2:
            times.append(elapsed)
    return _percentiles(times)


def run(known: dict[str, Any], runs: int) -> bool:
    from imaging import worklist
    from imaging.principals import as_principal

    within = True
    print("\nload average at the start: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"\n{'search':38} {'doctor ms p50 [p95]':>22} {'hits':>6} "
          f"{'clinic admin ms p50 [p95]':>27} {'hits':>6}")
    for label, params in searches(known):
        cells = []
        for user in (known["doctor"], known["admin"]):
            principal = as_principal(user)
            clinics = worklist.clinic_choices(principal)
            times = []
            hits = ""
            for attempt in range(runs + 2):
                start = time.perf_counter()
                page = worklist.search(principal, worklist.parse(params, clinics=clinics))
                elapsed = (time.perf_counter() - start) * 1000
                if attempt >= 2:  # the first two warm the caches
                    times.append(elapsed)
                hits = f"{'>' if page.capped else ''}{page.count}"
            p50, p95 = _percentiles(times)
            within &= p95 < 100
            cells.append(f"{p50:9.1f} [{p95:6.1f}]{'' if p95 < 100 else ' !'} {hits:>6}")
        print(f"{label:38} {cells[0]:>29} {cells[1]:>34}", flush=True)

    print("load average at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("\nthrough the page (test client: session, middleware, view, audit entry, template)")
    for label, params in [("everything, newest first", {}),
                          ("name part, no accents (joao)", {"name": "joao"}),
                          ("combination", searches(known)[15][1])]:
        cells = []
        for user in (known["doctor"], known["admin"]):
            p50, p95 = page_times(user, params, runs)
            cells.append(f"{p50:9.1f} [{p95:6.1f}]")
        print(f"{label:38} {cells[0]:>22} {'':6} {cells[1]:>27}", flush=True)
    return within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each search")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-worklist-"))
    for name in ("DICOM_STORAGE_DIR", "S3_BUCKET", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG"):
        os.environ.pop(name, None)
    os.environ.update(DATA_DIR=str(data), DJANGO_SETTINGS_MODULE="portal.settings",
                      ALLOWED_HOSTS="testserver", REQUIRE_2FA="false")
    os.environ["DATABASE_URL"], drop = server_database(args.postgres)

    import django

    django.setup()
    import logging

    from django.core.management import call_command

    logging.getLogger("axes").setLevel(logging.WARNING)  # one line per sign-in otherwise

    try:
        call_command("migrate", verbosity=0)
        known = fill(args.studies)
        within = run(known, args.runs)
    finally:
        if not args.keep:
            drop()
    print("\nevery search p95 under 100 ms" if within else "\nsome search p95 at 100 ms or more")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
