"""What is kept of each biometric field: encrypted, stored as received, or dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

FieldPolicy = Literal["encrypt", "store", "drop"]
FIELD_POLICIES: tuple[FieldPolicy, ...] = get_args(FieldPolicy)


def parse_field_policy(raw: str) -> FieldPolicy:
    """``encrypt``, ``store`` or ``drop`` (any case, surrounding spaces ignored)."""
    value = raw.strip().lower()
    for policy in FIELD_POLICIES:
        if value == policy:
            return policy
    raise ValueError(f"{raw.strip()!r} is not one of {', '.join(FIELD_POLICIES)}")


@dataclass(frozen=True, slots=True)
class BiometricPolicy:
    """One policy per biometric field; demographics are a person's age and gender."""

    thumbnails: FieldPolicy = "encrypt"
    embeddings: FieldPolicy = "encrypt"
    demographics: FieldPolicy = "store"

    @property
    def encrypts_bodies(self) -> bool:
        """Raw delivery bodies hold every field, so they are encrypted when any field is."""
        return "encrypt" in (self.thumbnails, self.embeddings, self.demographics)

    @property
    def needs_key(self) -> bool:
        return self.encrypts_bodies

    def dropped_fields(self) -> tuple[str, ...]:
        """The payload's person fields a ``drop`` policy keeps out of rows and bodies."""
        fields: list[str] = []
        if self.demographics == "drop":
            fields += ["age", "gender"]
        if self.embeddings == "drop":
            fields.append("face_embedding")
        if self.thumbnails == "drop":
            fields.append("face_thumbnail")
        return tuple(fields)

    def describe(self) -> dict[str, str]:
        """The policy by name, in a stable order, for logs and the audit trail."""
        return {
            "thumbnails": self.thumbnails,
            "embeddings": self.embeddings,
            "demographics": self.demographics,
            "raw_bodies": "encrypt" if self.encrypts_bodies else "store",
        }
