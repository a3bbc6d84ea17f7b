"""The suppression list: customers erased on request, kept only as keyed hashes, whom the ingest keeps out of every later run.

A customer's keyed hash is SHA-256 of ``<key>:<customer id>``, with a 256-bit key held apart
from the data (``SEGREC_ERASURE_KEY``, or a key file beside the list that only its owner may
read): the list alone tells no one who was erased, and the same hash is computed in Spark to
find their rows.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field


def new_key() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class Suppression:
    key: str
    hashes: frozenset[str] = field(default_factory=frozenset)

    def hash_of(self, customer_id: str) -> str:
        return hashlib.sha256(f"{self.key}:{customer_id}".encode()).hexdigest()

    def adding(self, customer_ids) -> "Suppression":
        return Suppression(self.key, self.hashes | {self.hash_of(customer_id) for customer_id in customer_ids})

    def matches(self, column):
        """A Spark column: whether the customer id in ``column`` (text) is on the list (false for a null id)."""
        from pyspark.sql import functions as F

        if not self.hashes:
            return F.lit(False)
        keyed = F.sha2(F.concat(F.lit(f"{self.key}:"), column), 256)
        return column.isNotNull() & keyed.isin(sorted(self.hashes))
