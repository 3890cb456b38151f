"""OHIF's prebuilt ``dist/`` (npm ``@ohif/app``, fetched by ``bin/fetch-ohif``) served under a
path prefix, and the ``app-config.js`` that points it at this archive's DICOMweb.

The prebuilt bundle assumes it lives at ``/``: ``index.html`` names its files with absolute
paths and sets ``window.PUBLIC_URL = "/"``, the webpack runtime in the main bundle and in
each worker bundle is compiled with ``__webpack_require__.p = "/"`` (the public path chunks,
workers and images are loaded from; OHIF never sets ``__webpack_public_path__`` from
``PUBLIC_URL`` at run time), and the main stylesheet loads its font from ``url(/...)``.
Those few strings are rewritten as the files are served, so the same unmodified package
works under any prefix; ``routerBasename`` in the generated config does the same for
OHIF's routes. Nothing here touches patient data: DICOMweb does, with its own policy.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

DICOMWEB_SOURCE = "dicomweb"
# The main bundle and every worker bundle carry webpack's compiled public path.
_PUBLIC_PATH = b'__webpack_require__.p = "/";'
_CSS_ROOT_URL = re.compile(rb"url\(/(?!/)")
_HTML_ROOT_REF = re.compile(r'(\s(?:href|src)=")/(?!/)')
_HTML_PUBLIC_URL = 'window.PUBLIC_URL="/"'
# Files whose names carry a content hash may be cached for good.
_HASHED = re.compile(r"(\.bundle\.[0-9a-f]{8,}\.js|^[0-9a-f]{16}\.(wasm|woff2?))$")

CONTENT_TYPES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".html": "text/html; charset=utf-8", ".json": "application/json",
    ".wasm": "application/wasm", ".svg": "image/svg+xml", ".png": "image/png",
    ".ico": "image/x-icon", ".woff2": "font/woff2", ".woff": "font/woff",
    ".xml": "application/xml", ".map": "application/json", ".txt": "text/plain",
}


# The languages OHIF ships, by the portal's language code (settings.LANGUAGES).
OHIF_LANGUAGES = {"pt-br": "pt-BR", "es": "es", "en": "en-US"}
# i18next's browser language detector, as OHIF configures it (platform/i18n/src/config.js),
# reads ?lng=, then this cookie, then localStorage's i18nextLng, then the browser's.
LANGUAGE_COOKIE = "i18next"
# What bin/fetch-ohif writes a gzip copy of (when over 1 KiB).
COMPRESSIBLE = {".js", ".mjs", ".css", ".wasm", ".json", ".svg", ".html"}


class NotInstalled(Exception):
    """OHIF_DIST has no OHIF build (bin/setup installs it). The message names no path:
    it may reach a page."""


@dataclass(frozen=True)
class Prepared:
    """A file to send: ``data`` when rewritten for the prefix, else ``path`` as is.

    ``gzipped`` is the same content gzip-compressed, a file or bytes, when there is one.
    """

    path: Path
    content_type: str
    data: bytes | None
    immutable: bool
    gzipped: Path | bytes | None = None


def installed(dist: Path) -> bool:
    return (dist / "index.html").is_file()


def index_path(dist: Path) -> Path:
    index = dist / "index.html"
    if not index.is_file():
        raise NotInstalled("no OHIF build: run bin/setup (or bin/fetch-ohif)")
    return index


def ohif_language(portal_language: str | None) -> str:
    """OHIF's code for the portal's language (``pt-br`` is ``pt-BR``); English otherwise."""
    code = (portal_language or "").lower()
    return OHIF_LANGUAGES.get(code) or OHIF_LANGUAGES.get(code.split("-")[0], "en-US")


def index_html(dist: Path, prefix: str) -> bytes:
    """OHIF's index.html with its public URL and every root-relative reference under
    ``prefix`` (which starts and ends with ``/``)."""
    path = index_path(dist)
    stat = path.stat()
    return _index_html(str(path), stat.st_mtime_ns, prefix)


@functools.lru_cache(maxsize=8)
def _index_html(path: str, _mtime_ns: int, prefix: str) -> bytes:
    html = Path(path).read_text(encoding="utf-8")
    public = (f"window.PUBLIC_URL={json.dumps(prefix)};"
              f"window.PUBLIC_LIB_URL={json.dumps(prefix + '${component}/')}")
    html = html.replace(_HTML_PUBLIC_URL, public)
    html = _HTML_ROOT_REF.sub(lambda m: m.group(1) + prefix, html)
    return html.encode("utf-8")


def prepare(dist: Path, relative: str, prefix: str, *, gzip_ok: bool = False
            ) -> Prepared | None:
    """The file at ``relative`` inside ``dist`` ready to send, or None if there is none.

    Refuses anything that resolves outside ``dist`` (``..``, symlinks out). With
    ``gzip_ok`` (the client accepts gzip) the result carries the gzip copy bin/fetch-ohif
    wrote beside the file, or, for the few files rewritten for the prefix, their rewritten
    bytes compressed once and kept.
    """
    root = dist.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    immutable = bool(_HASHED.search(path.name))
    if path.suffix in (".js", ".css"):
        stat = path.stat()
        data = _rewritten(str(path), stat.st_mtime_ns, prefix)
        if data is not None:
            packed = _gzipped(str(path), stat.st_mtime_ns, prefix) if gzip_ok else None
            return Prepared(path, content_type, data, immutable, packed)
    packed_file = path.with_name(path.name + ".gz") if gzip_ok else None
    if packed_file is not None and not packed_file.is_file():
        packed_file = None
    return Prepared(path, content_type, None, immutable, packed_file)


@functools.lru_cache(maxsize=32)
def _gzipped(path: str, mtime_ns: int, prefix: str) -> bytes | None:
    data = _rewritten(path, mtime_ns, prefix)
    return None if data is None else gzip.compress(data, compresslevel=6, mtime=0)


@functools.lru_cache(maxsize=256)
def _rewritten(path: str, _mtime_ns: int, prefix: str) -> bytes | None:
    """The file with its root-relative public path moved under ``prefix``; None when it
    has none (most files), so only the few rewritten ones are kept in memory."""
    data = Path(path).read_bytes()
    encoded = prefix.encode()
    if path.endswith(".js"):
        if _PUBLIC_PATH not in data:
            return None
        return data.replace(_PUBLIC_PATH, b'__webpack_require__.p = "' + encoded + b'";')
    if _CSS_ROOT_URL.search(data) is None:
        return None
    return _CSS_ROOT_URL.sub(b"url(" + encoded, data)


def app_config(*, dicomweb_root: str, router_basename: str,
               shared_array_buffer: bool) -> str:
    """``window.config`` for OHIF: one DICOMweb data source, this archive.

    Nothing here asks for compressed frames: with no ``acceptHeader`` in the data source,
    cornerstone's WADO-RS loader asks every frame with ``transfer-syntax=*``, and the
    archive answers native frames with lossless JPEG-LS (``WADO_FRAMES_ANY_SYNTAX``), which
    OHIF decodes. HTJ2K lossless is served only when named, which OHIF does only if the
    data source's ``acceptHeader`` asks for ``image/jphc`` (its
    ``requestTransferSyntaxUID`` knows no HTJ2K UID); that is not set here.

    ``useSharedArrayBuffer`` is ``'FALSE'`` unless the viewer page is cross-origin isolated
    (COOP ``same-origin`` and COEP ``require-corp``); without it OHIF's volume viewports
    (MPR) wait forever for a SharedArrayBuffer the browser will not give.
    """
    config: dict[str, Any] = {
        "name": "imaging-portal",
        "routerBasename": router_basename,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "useSharedArrayBuffer": "AUTO" if shared_array_buffer else "FALSE",
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": DICOMWEB_SOURCE,
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": DICOMWEB_SOURCE,
            "configuration": {
                "friendlyName": "Imaging portal",
                "name": DICOMWEB_SOURCE,
                "qidoRoot": dicomweb_root,
                "wadoRoot": dicomweb_root,
                "wadoUriRoot": dicomweb_root,
                "qidoSupportsIncludeField": True,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": False,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            },
        }],
    }
    return ("/** Generated by the portal (viewer.ohif.app_config). */\n"
            f"window.config = {json.dumps(config, indent=2)};\n")


# OHIF's hanging protocol that lays two studies side by side (extension-default's
# "@ohif/hpCompare"). Its studies are matched by their place in StudyInstanceUIDs (its
# rule ``studyInstanceUIDsIndex``): the first is the left column, the second the right.
# OHIF 3.13 opens it from a URL always at its first stage, a 2x2 grid (current | prior,
# first series above, second below; a study with one series leaves its lower pane empty):
# its stages have no ``id`` for ``stageid`` to choose the 1x2 one.
COMPARE_PROTOCOL = "@ohif/hpCompare"


def study_query(study_uid: str, prior_uid: str | None = None) -> str:
    """The query string of OHIF's viewer route for one study, or for a study with a prior
    side by side (both studies loaded in one layout, the current one on the left).

    ``hangingProtocolId`` is spelt as OHIF spells it: its route reads the key in any case,
    but it keeps a key when navigating between its study list and its modes only when
    spelt exactly so (``preserveQueryParameters``).
    """
    if prior_uid is None:
        return urlencode({"StudyInstanceUIDs": study_uid})
    return urlencode({"StudyInstanceUIDs": f"{study_uid},{prior_uid}",
                      "hangingProtocolId": COMPARE_PROTOCOL})
