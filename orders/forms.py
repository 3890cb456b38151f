"""The staff form for an order entered by hand (clinics without an EHR feed)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import Clinic

from .models import ScheduledProcedure

#: DICOM PatientSex (0010,0040): female, male, other; empty when not known.
SEXES = (("", _("Not known")), ("F", _("Female")), ("M", _("Male")), ("O", _("Other")))


class OrderForm(forms.Form):
    clinic = forms.ModelChoiceField(queryset=Clinic.objects.none(), label=_("Clinic"))
    patient_id = forms.CharField(max_length=64, label=_("Patient ID"))
    patient_name = forms.CharField(max_length=200, label=_("Patient name (Family^Given)"))
    # Taken for a new patient, and for one whose record lacks them; a record's known
    # values are changed by the EHR's ADT^A08 or in admin, not by an order.
    birth_date = forms.DateField(required=False, label=_("Patient birth date"),
                                 widget=forms.DateInput(attrs={"type": "date"}),
                                 help_text=_("for a new patient"))
    sex = forms.ChoiceField(choices=SEXES, required=False, label=_("Patient sex"),
                            help_text=_("for a new patient"))
    accession_number = forms.CharField(max_length=16, label=_("Accession number"))
    modality = forms.RegexField(regex=r"^[A-Z0-9_]{1,16}$", label=_("Modality"))
    station = forms.CharField(max_length=16, required=False,
                              label=_("Scheduled station AE title"))
    scheduled = forms.DateTimeField(label=_("Scheduled date and time"))
    description = forms.CharField(max_length=64, required=False,
                                  label=_("Requested procedure"))
    referring_physician = forms.CharField(max_length=324, required=False,
                                          label=_("Referring physician (Family^Given)"))
    priority = forms.ChoiceField(choices=ScheduledProcedure.Priority.choices,
                                 label=_("Priority"))

    def __init__(self, *args: Any, clinics: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["clinic"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = clinics
