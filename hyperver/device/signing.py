"""Ed25519 keys for artifacts: the server signs with a private key, devices trust public keys.

Ed25519 (not HMAC) so a device holds nothing that lets it forge a model. Keys are given as
base64 of the raw 32 bytes or as a path to a PEM file; they come from the config or the
environment (``HYPERVER_SERVER_KEY`` for the signer, ``HYPERVER_TRUSTED_KEYS`` for devices,
comma-separated) and never live in the repository. ``hyperver artifact keygen`` makes a pair.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..config import Config
from ..errors import ConfigError, ModelFileError

SIGNATURE_BYTES = 64
SIGNER_ENV = "HYPERVER_SERVER_KEY"
TRUSTED_ENV = "HYPERVER_TRUSTED_KEYS"


def key_id(public_raw: bytes) -> str:
    """Short fingerprint of a public key (shown in artifacts and error messages)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _key_material(value: str, what: str) -> tuple[str, bytes]:
    """('pem', bytes) for a PEM file path, ('raw', 32 bytes) for base64; clear errors otherwise."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        return "pem", value.encode()
    path = Path(os.path.expanduser(value))
    if len(value) < 200 and path.is_file():
        return "pem", path.read_bytes()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is neither a PEM file nor base64 of a 32-byte Ed25519 key") from None
    if len(raw) != 32:
        raise ConfigError(f"{what} decodes to {len(raw)} bytes; an Ed25519 key is 32 bytes")
    return "raw", raw


class Signer:
    def __init__(self, private_key):
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        self.public_raw = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                serialization.PublicFormat.Raw)
        self.key_id = key_id(self.public_raw)

    @classmethod
    def generate(cls) -> "Signer":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_value(cls, value: str, what: str = "signing key") -> "Signer":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        kind, material = _key_material(value, what)
        if kind == "raw":
            return cls(Ed25519PrivateKey.from_private_bytes(material))
        try:
            key = serialization.load_pem_private_key(material, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{what}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{what}: the PEM key is not an Ed25519 key")
        return cls(key)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def private_b64(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return base64.b64encode(self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                        serialization.NoEncryption())).decode()

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class TrustedKeys:
    """The public keys a device accepts signatures from."""

    def __init__(self, public_raw: Iterable[bytes]):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.keys = {key_id(raw): Ed25519PublicKey.from_public_bytes(raw) for raw in public_raw}

    @classmethod
    def from_values(cls, values: Iterable[str]) -> "TrustedKeys":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        raws = []
        for i, value in enumerate(v for v in values if str(v).strip()):
            kind, material = _key_material(str(value), f"trusted key #{i + 1}")
            if kind == "pem" and b"PRIVATE KEY" in material:   # e.g. the HYPERVER_SERVER_KEY file by mistake
                raise ConfigError(f"trusted key #{i + 1} is a private key; a device trusts the public key: the .pub "
                                  "file `hyperver artifact keygen` wrote beside it, or its base64")
            if kind == "pem":
                try:
                    key = serialization.load_pem_public_key(material)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"trusted key #{i + 1}: not a PEM public key: {exc}") from None
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigError(f"trusted key #{i + 1}: not an Ed25519 public key")
                material = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            raws.append(material)
        return cls(raws)

    def verify(self, signature: bytes, data: bytes) -> str:
        """The id of the trusted key that made ``signature``; ModelFileError if none did."""
        from cryptography.exceptions import InvalidSignature

        if not self.keys:
            raise ModelFileError("no trusted signing key configured (--trusted-key, device.trusted_keys or "
                                 f"{TRUSTED_ENV}); refusing to run an unverifiable model")
        for kid, key in self.keys.items():
            try:
                key.verify(signature, data)
                return kid
            except InvalidSignature:
                continue
        raise ModelFileError("signature does not verify: the model was altered or signed by an untrusted key "
                             f"(trusted: {', '.join(self.keys)})")


def find_signer(cfg: Config, env: Mapping[str, str] | None = None) -> Signer | None:
    """The configured signing key (``HYPERVER_SERVER_KEY`` wins over artifacts.signing_key), None if neither is set.

    A key that is set but unusable is an error, not None: a typo must not silently skip signing.
    """
    env = os.environ if env is None else env
    value = env.get(SIGNER_ENV) or cfg.get_path("artifacts.signing_key", None)
    return Signer.from_value(str(value), "artifact signing key") if value else None


def load_signer(cfg: Config, env: Mapping[str, str] | None = None) -> Signer:
    signer = find_signer(cfg, env)
    if signer is None:
        raise ConfigError(f"no artifact signing key: set {SIGNER_ENV} or artifacts.signing_key "
                          "(create one with `hyperver artifact keygen`)")
    return signer


def load_trusted_keys(cfg: Config, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> TrustedKeys:
    env = os.environ if env is None else env
    values = list(extra)
    configured = cfg.get_path("device.trusted_keys", []) or []
    values += env[TRUSTED_ENV].split(",") if env.get(TRUSTED_ENV) else list(configured)
    return TrustedKeys.from_values(values)
