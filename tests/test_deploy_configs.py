"""The files in deploy/ are what their own tools accept: ``nginx -t``, ``haproxy -c`` and
``systemd-analyze verify``, each run on the shipped file (paths that only exist on an
installed host are pointed at this checkout or at a throwaway certificate first)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.cluster.hosts import LISTENER_NODES, Cluster

BASE_DIR = Path(__file__).resolve().parents[1]
DEPLOY = BASE_DIR / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_nginx_site_passes_nginx_t(tmp_path):
    nginx = _tool("nginx")
    key, cert = tmp_path / "privkey.pem", tmp_path / "fullchain.pem"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
          "-subj", "/CN=portal.example.org", "-keyout", str(key), "-out", str(cert)])
    site = (DEPLOY / "nginx" / "portal.conf").read_text()
    site = site.replace("/etc/ssl/portal/privkey.pem", str(key)).replace(
        "/etc/ssl/portal/fullchain.pem", str(cert))
    (tmp_path / "portal.conf").write_text(site)
    # nginx.conf as Debian's, reduced to what a site needs: the site goes in its http block.
    main = tmp_path / "nginx.conf"
    main.write_text(f"""pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    include /etc/nginx/mime.types;
    client_body_temp_path {tmp_path};
    include {tmp_path}/portal.conf;
}}
""")
    result = _run([nginx, "-t", "-q", "-c", str(main), "-p", str(tmp_path)])
    assert result.returncode == 0, result.stderr


def test_the_nginx_site_forwards_what_the_portal_trusts():
    """The headers portal/settings.py reads behind a proxy (TRUSTED_PROXIES with
    X-Forwarded-For appended, SECURE_PROXY_SSL_HEADER's X-Forwarded-Proto) are set."""
    site = (DEPLOY / "nginx" / "portal.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site
    assert "proxy_set_header Host $host;" in site
    settings_source = (BASE_DIR / "portal" / "settings.py").read_text()
    assert '("HTTP_X_FORWARDED_PROTO", "https")' in settings_source
    for name in re.findall(r"^#\s+([A-Z_]+)=", site, re.M):  # the settings it names
        assert f'"{name}"' in settings_source, name


def test_the_dicom_balancer_passes_haproxy_c():
    result = _run([_tool("haproxy"), "-c", "-f", str(DEPLOY / "haproxy" / "dicom.cfg")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cluster_harness_balancers_pass_haproxy_c(tmp_path):
    haproxy = _tool("haproxy")
    config = Cluster(tmp_path).haproxy_config("dicom", "127.0.0.1", 11112, LISTENER_NODES,
                                              11112)
    result = _run([haproxy, "-c", "-f", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dicom_balancer_checks_the_port_the_listener_unit_opens():
    unit = (DEPLOY / "systemd" / "portal-dicom.service").read_text()
    health = re.search(r"DICOM_HEALTH_PORT=(\d+)", unit)
    assert health, unit
    assert f"check port {health[1]}" in (DEPLOY / "haproxy" / "dicom.cfg").read_text()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_systemd_unit_passes_systemd_analyze_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    # The unit as installed, but running this checkout: verify checks that ExecStart's
    # program exists and is executable.
    text = unit.read_text().replace("/opt/portal/.venv", str(Path(BASE_DIR / ".venv")))
    text = text.replace("/opt/portal", str(BASE_DIR))
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = _run([analyze, "verify", "--man=no", str(copy)])
    # verify also reports on units it pulls in from this machine; only ours count here.
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if unit.name in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_there_is_a_unit_for_every_role():
    assert {u.name for u in UNITS} == {"portal-web.service", "portal-dicom.service",
                                       "portal-hl7.service", "portal-worker.service",
                                       "portal-beat.service"}
