"""What the query API needs to open sealed values and to say what a response lacks."""

from __future__ import annotations

from starlette.requests import Request

from service.privacy.reveal import Revealer

WITHHELD_HEADER = "Withheld-Biometrics"
"""Set on ``/payload`` and ``/raw`` when biometric fields were left out of what is returned
(a ``drop`` policy, an erasure): e.g. ``fields=face_embedding; erased_persons=0/2``."""


def revealer(request: Request) -> Revealer:
    """A revealer for one request, with the service's keyring."""
    return Revealer(request.state.keyring)
