"""What the OHIF browser tests share: the tools a hand uses in the viewer (drag, pick a
tool), what the page shows (drawn viewports, measurement labels and panel) and the SR
classes OHIF writes."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import cast

from playwright.sync_api import Page

from .test_ohif_viewer import _canvas_has_image

# Measurement Report SR storage classes OHIF may write (Enhanced, Comprehensive, 3D).
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
              "1.2.840.10008.5.1.4.1.1.88.34"}
# OHIF's guided tour of the viewer, marked as seen so it covers no button.
NO_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"


def open_study(page: Page, live_server, study_uid: str) -> dict[str, float]:
    """OHIF's viewer on the study, once its image is drawn; the viewport's centre."""
    page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={study_uid}")
    page.wait_for_selector("canvas.cornerstone-canvas")
    for _ in range(300):
        if _canvas_has_image(page):
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError("OHIF drew no image")
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    assert box is not None
    return {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse drag in small steps, as cornerstone's tools expect from a hand."""
    page.mouse.move(*start)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(start[0] + (end[0] - start[0]) * step / 10,
                        start[1] + (end[1] - start[1]) * step / 10)
    page.mouse.up()


def pick_tool(page: Page, tool: str) -> None:
    """A tool of the toolbar's measurement group (Length is its first, the rest are in its
    drop-down)."""
    if tool == "Length":
        page.click("[data-cy=Length-btn]")
        return
    page.click("[data-cy=MeasurementTools-split-button-secondary]")
    page.click(f"[data-cy={tool}]")


def annotation_texts(page: Page) -> list[str]:
    """The labels cornerstone draws beside each measurement (SVG text in the viewport)."""
    return [text.text_content() or "" for text in page.query_selector_all(
        "[data-cy=viewport-pane] svg text")]


def measurement_panel(page: Page) -> str:
    """The panel's text once it stops changing (OHIF updates it a moment after a drag)."""
    text = page.inner_text("[data-cy=trackedMeasurements-panel]")
    for _ in range(50):
        page.wait_for_timeout(200)
        again = page.inner_text("[data-cy=trackedMeasurements-panel]")
        if again == text:
            return text
        text = again
    raise AssertionError(f"the measurement panel keeps changing: {text}")


def ellipse_statistics(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in re.findall(
        r"(Mean|Std Dev|Max|Min): (-?[\d.]+) HU", text)}


@dataclass(frozen=True)
class Pane:
    """One OHIF viewport as the page shows it: its overlay text, where it is, its picture."""

    text: str
    x: float
    y: float
    picture: bytes

    def has_image(self) -> bool:
        """More than a flat colour: a spread of grey levels, as an image has."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.picture)).convert("L")
        low, high = cast(tuple[int, int], image.getextrema())
        return bool(high - low > 40 and len(image.resize((64, 64)).getcolors(4096) or []) > 8)


def drawn_panes(page: Page) -> list[Pane]:
    """The viewports whose canvas shows an image, left to right, top to bottom."""
    panes = []
    for element in page.query_selector_all("[data-cy=viewport-pane]"):
        canvas = element.query_selector("canvas.cornerstone-canvas")
        box = canvas.bounding_box() if canvas else None
        if canvas is None or not box or box["width"] < 32 or box["height"] < 32:
            continue
        pane = Pane(element.inner_text(), box["x"], box["y"], canvas.screenshot())
        if pane.has_image():
            panes.append(pane)
    return sorted(panes, key=lambda p: (p.y, p.x))


def showing(panes: list[Pane], series: str) -> Pane | None:
    return next((pane for pane in panes if series in pane.text), None)
