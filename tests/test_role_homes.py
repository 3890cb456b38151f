"""Each role lands on its own home and is offered only its own pages.

paula (patient) lands on her exams and is never offered the staff study list; tina
(technician) on the upload page; dora (doctor) and alice (admin) on the study list.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from .conftest import PASSWORD


def sign_in(client, username: str):
    return client.post("/accounts/login/", {"username": username, "password": PASSWORD},
                       follow=True)


@pytest.mark.parametrize(("persona", "home"), [
    ("paula", "patients:exams"), ("tina", "imaging:upload"), ("dora", "imaging:study_list"),
    ("alice", "imaging:study_list"),
])
def test_each_role_lands_on_its_own_home_after_signing_in(client, request, persona, home):
    request.getfixturevalue(persona)
    response = sign_in(client, persona)
    assert response.redirect_chain[-1][0] == reverse(home)
    assert response.status_code == 200


def test_a_patient_is_not_offered_the_staff_pages(client, paula):
    client.force_login(paula)
    page = client.get(reverse("patients:exams")).content.decode()
    assert f'href="{reverse("imaging:study_list")}"' not in page
    assert f'href="{reverse("imaging:upload")}"' not in page
    assert f'href="{reverse("patients:exams")}"' in page


def test_a_technician_is_offered_the_upload_page_and_not_the_archive(client, tina):
    client.force_login(tina)
    page = client.get(reverse("imaging:upload")).content.decode()
    assert f'href="{reverse("imaging:upload")}"' in page
    assert f'href="{reverse("imaging:study_list")}"' not in page
    assert f'href="{reverse("patients:exams")}"' not in page


def test_a_doctor_is_offered_the_archive_and_emergency_access_not_upload(client, dora):
    client.force_login(dora)
    page = client.get(reverse("imaging:study_list")).content.decode()
    assert f'href="{reverse("imaging:study_list")}"' in page
    assert f'href="{reverse("break_glass")}"' in page
    assert f'href="{reverse("imaging:upload")}"' not in page
