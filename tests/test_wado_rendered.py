"""WADO-RS rendered images and thumbnails: JPEG or PNG a browser can show, windowed as asked,
scaled into the viewport; anything else is 406."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from imaging.models import Instance
from tests import wado_support
from tests.wado_support import parse_multipart, pydicom_file, store

paula_study = wado_support.paula_study

pytestmark = pytest.mark.django_db


def _paths(study_uid: str) -> tuple[str, str, str]:
    series_uid, sop_uid = (Instance.objects.filter(series__study__study_instance_uid=study_uid)
                           .order_by("series__series_number", "instance_number")
                           .values_list("series__series_instance_uid", "sop_instance_uid")
                           .first())  # type: ignore[misc]
    study = f"/dicomweb/studies/{study_uid}"
    series = f"{study}/series/{series_uid}"
    return study, series, f"{series}/instances/{sop_uid}"


def _image(response, fmt: str) -> Image.Image:
    assert response.status_code == 200, response.content
    image = Image.open(io.BytesIO(response.content))
    assert image.format == fmt
    return image


def test_an_instance_renders_as_jpeg_and_png(client, paula_study, paula):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    jpeg = _image(client.get(f"{instance}/rendered", HTTP_ACCEPT="image/jpeg"), "JPEG")
    assert jpeg.size == (128, 128)
    png = client.get(f"{instance}/rendered", HTTP_ACCEPT="image/png")
    assert png["Content-Type"] == "image/png"
    assert _image(png, "PNG").mode == "L"
    default = client.get(f"{instance}/rendered")
    assert default["Content-Type"] == "image/jpeg"


def test_the_window_parameter_changes_the_pixels(client, paula_study, paula):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    url = f"{instance}/rendered"

    def pixels(query: str) -> np.ndarray:
        response = client.get(f"{url}?{query}", HTTP_ACCEPT="image/png")
        return np.asarray(_image(response, "PNG"))

    soft, lung = pixels("window=40,400"), pixels("window=-600,1500")
    assert not np.array_equal(soft, lung)
    assert np.array_equal(pixels(""), soft)  # the dataset's own window is 40/400
    narrow = pixels("window=0,1")
    assert set(np.unique(narrow)) <= {0, 255}
    sigmoid = pixels("window=40,400,sigmoid")
    assert not np.array_equal(sigmoid, soft)


def test_the_viewport_is_honoured_keeping_the_aspect(client, paula_study, paula):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    image = _image(client.get(f"{instance}/rendered?viewport=64,64"), "JPEG")
    assert image.size == (64, 64)
    image = _image(client.get(f"{instance}/rendered?viewport=300,100"), "JPEG")
    assert image.size == (100, 100)


def test_quality_changes_the_jpeg(client, paula_study, paula):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    low = client.get(f"{instance}/rendered?quality=5").content
    high = client.get(f"{instance}/rendered?quality=95").content
    assert len(low) < len(high)


@pytest.mark.parametrize("query", ["window=40", "window=a,b", "window=40,400,cubic",
                                   "viewport=0,10", "quality=101"])
def test_bad_rendering_parameters_are_400(client, paula_study, paula, query):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    assert client.get(f"{instance}/rendered?{query}").status_code == 400


def test_thumbnails_at_every_level(client, paula_study, paula):
    client.force_login(paula)
    for path in _paths(paula_study[0]):
        image = _image(client.get(f"{path}/thumbnail", HTTP_ACCEPT="image/jpeg"), "JPEG")
        assert max(image.size) <= 128
    image = _image(client.get(f"{path}/thumbnail?viewport=32,32", HTTP_ACCEPT="image/png"),
                   "PNG")
    assert image.size == (32, 32)


def test_series_rendered_is_one_image_per_instance(client, paula_study, paula):
    client.force_login(paula)
    _, series, _ = _paths(paula_study[0])
    response = client.get(f"{series}/rendered", HTTP_ACCEPT="image/jpeg")
    assert response.status_code == 200
    parts = parse_multipart(response["Content-Type"], b"".join(response.streaming_content))
    assert len(parts) == 6
    assert all(Image.open(io.BytesIO(p)).format == "JPEG" for _, p in parts)


def test_frames_rendered(client, alice):
    path = pydicom_file("examples_ybr_color.dcm")  # 30 frames of colour JPEG
    store([path])
    ds = dcmread(path, stop_before_pixels=True)
    client.force_login(alice)
    base = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames")
    image = _image(client.get(f"{base}/5/rendered", HTTP_ACCEPT="image/png"), "PNG")
    assert image.mode == "RGB"
    assert image.size == (ds.Columns, ds.Rows)
    assert client.get(f"{base}/31/rendered").status_code == 400


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "examples_palette.dcm",
                                  "SC_rgb_rle_16bit.dcm", "liver_1frame.dcm"])
def test_awkward_files_render(client, alice, name):
    path = pydicom_file(name)
    store([path])
    ds = dcmread(path, stop_before_pixels=True)
    client.force_login(alice)
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/rendered")
    _image(client.get(url, HTTP_ACCEPT="image/png"), "PNG")


def test_gif_is_406(client, paula_study, paula):
    client.force_login(paula)
    _, _, instance = _paths(paula_study[0])
    assert client.get(f"{instance}/rendered", HTTP_ACCEPT="image/gif").status_code == 406
    assert client.get(f"{instance}/thumbnail", HTTP_ACCEPT="image/gif").status_code == 406


def test_charlie_cannot_see_paulas_thumbnail(client, paula_study, charlie):
    client.force_login(charlie)
    study, _, _ = _paths(paula_study[0])
    assert client.get(f"{study}/thumbnail").status_code == 404
