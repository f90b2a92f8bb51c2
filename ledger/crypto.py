"""Personal-data encryption: one AES-GCM data key per subject (lead), wrapped by a master key.

Destroying a subject's wrapped key (crypto-shredding) makes every personal field of that subject
unreadable everywhere in the ledger at once, without touching an event row.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class MasterKeyError(ValueError):
    pass


def parse_master_key(text: str) -> bytes:
    """A master key is 32 random bytes, written as URL-safe or standard base64."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError as exc:
        raise MasterKeyError("LEADLEDGER_MASTER_KEY is not base64") from exc
    if len(raw) != 32:
        raise MasterKeyError("LEADLEDGER_MASTER_KEY must decode to 32 bytes")
    return raw


def generate_master_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class DataKey:
    """A subject's plaintext data key, with its wrapped form for storage."""

    __slots__ = ("aead", "is_new", "wrapped")

    def __init__(self, aead: AESGCM, wrapped: bytes, is_new: bool) -> None:
        self.aead = aead
        self.wrapped = wrapped
        self.is_new = is_new

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        return self.aead.decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)


class Keyring:
    """Creates and unwraps subject data keys under the master key."""

    def __init__(self, master_key: bytes) -> None:
        self._master = AESGCM(master_key)
        self._unwrap_cached = lru_cache(maxsize=65_536)(self._unwrap)

    def new_key(self, workspace: str, subject_id: str) -> DataKey:
        raw = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, raw, _subject_aad(workspace, subject_id))
        return DataKey(AESGCM(raw), wrapped, is_new=True)

    def unwrap(self, workspace: str, subject_id: str, wrapped: bytes) -> DataKey:
        """Unwrapping is cached by the wrapped bytes: a destroyed key is no longer fetched from
        the database, so a cache hit can only ever be for a key that still exists."""
        return self._unwrap_cached(workspace, subject_id, wrapped)

    def _unwrap(self, workspace: str, subject_id: str, wrapped: bytes) -> DataKey:
        try:
            raw = self._master.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _subject_aad(workspace, subject_id)
            )
        except InvalidTag as exc:
            raise MasterKeyError(
                f"cannot unwrap the data key of {subject_id}: wrong LEADLEDGER_MASTER_KEY?"
            ) from exc
        return DataKey(AESGCM(raw), wrapped, is_new=False)


def _subject_aad(workspace: str, subject_id: str) -> bytes:
    return f"{workspace}\x1f{subject_id}".encode()
