"""The staff form for an order entered by hand (clinics without an EHR feed)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import Clinic

from .models import ScheduledProcedure


class OrderForm(forms.Form):
    clinic = forms.ModelChoiceField(queryset=Clinic.objects.none(), label=_("Clinic"))
    patient_id = forms.CharField(max_length=64, label=_("Patient ID"))
    patient_name = forms.CharField(max_length=200, label=_("Patient name (Family^Given)"))
    accession_number = forms.CharField(max_length=16, label=_("Accession number"))
    modality = forms.RegexField(regex=r"^[A-Z0-9_]{1,16}$", label=_("Modality"))
    station = forms.CharField(max_length=16, required=False,
                              label=_("Scheduled station AE title"))
    scheduled = forms.DateTimeField(label=_("Scheduled date and time"))
    description = forms.CharField(max_length=64, required=False,
                                  label=_("Requested procedure"))
    priority = forms.ChoiceField(choices=ScheduledProcedure.Priority.choices,
                                 label=_("Priority"))

    def __init__(self, *args: Any, clinics: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["clinic"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = clinics
