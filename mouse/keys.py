"""CurveZMQ keys of a run: files, loading, and when the learner requires them.

A keys directory (``mouse keys KEYS_DIR``; pyzmq's ``zmq.auth`` certificate files)::

    KEYS_DIR/learner.key          the learner's public key (actors pin it)
    KEYS_DIR/learner.key_secret   the learner's key pair (the learner only)
    KEYS_DIR/actor.key            the actors' public key
    KEYS_DIR/actor.key_secret     the actors' key pair (every actor)
    KEYS_DIR/actors/*.key         the allow-list: public keys of the actors the learner accepts

The learner needs ``learner.key_secret`` and ``actors/``; an actor needs
``learner.key`` and ``actor.key_secret`` (so copy only those three to actor machines:
``learner.key_secret`` lets its holder pose as the learner).

Files are read wherever they come from: group-readable files owned by another user
(Kubernetes mounts Secrets root-owned 0440) and symlinks (Kubernetes' ``..data``
layout) are fine; only a secret readable by everyone gets a warning.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

log = logging.getLogger("mouse.keys")

ALLOW_DIR = "actors"
KEY_FILES = ("learner.key", "learner.key_secret", "actor.key", "actor.key_secret",
             f"{ALLOW_DIR}/actor.key")
ACTOR_HINT = "pass --keys DIR (a directory with learner.key, actor.key and actor.key_secret)"


@dataclass(frozen=True)
class LearnerKeys:
    """What the learner's sockets and authenticator need."""
    dir: Path
    public: bytes
    secret: bytes
    allow_dir: Path  # every *.key in it is an allowed actor public key


@dataclass(frozen=True)
class ActorKeys:
    """What an actor's sockets need: the pinned learner public key and the actor's own pair."""
    dir: Path
    learner_public: bytes
    public: bytes
    secret: bytes


def create_keys(keys_dir: str | os.PathLike, force: bool = False) -> Path:
    """Write a learner pair, an actor pair and the allow-list holding the actor's key.

    Directories get mode 0700 and files 0600; the keys are made in a private
    temporary directory first, so no secret is ever readable by others, even briefly.
    Refuses to replace existing keys unless ``force``.
    """
    keys_dir = Path(keys_dir)
    existing = [name for name in KEY_FILES if (keys_dir / name).exists()]
    if existing and not force:
        raise ValueError(f"{keys_dir} already holds keys ({', '.join(existing)}); "
                         "pass --force to replace them (actors with the old keys are then refused)")
    try:
        (keys_dir / ALLOW_DIR).mkdir(parents=True, exist_ok=True)
        for d in (keys_dir, keys_dir / ALLOW_DIR):
            d.chmod(0o700)
        tmp = Path(tempfile.mkdtemp(prefix=".new-keys-", dir=keys_dir))  # mode 0700
        try:
            for name in ("learner", "actor"):
                zmq.auth.create_certificates(tmp, name)
            shutil.copyfile(tmp / "actor.key", tmp / "allowed-actor.key")
            for f in tmp.iterdir():
                f.chmod(0o600)
            for name in ("learner.key", "learner.key_secret", "actor.key", "actor.key_secret"):
                os.replace(tmp / name, keys_dir / name)
            os.replace(tmp / "allowed-actor.key", keys_dir / ALLOW_DIR / "actor.key")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise ValueError(f"cannot write keys to {keys_dir}: {e}") from None
    return keys_dir


def has_keys(keys_dir: str | os.PathLike) -> bool:
    """True when any of the key files is there (then all the needed ones must be)."""
    return any((Path(keys_dir) / name).exists() for name in KEY_FILES)


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        if not path.exists():
            raise ValueError(f"missing CurveZMQ key file {path} (create keys with: mouse keys DIR)") from None
        raise ValueError(f"cannot read CurveZMQ key file {path}: {e}") from None
    if secret:
        if not secret_key:
            raise ValueError(f"{path} holds no secret key (expected a .key_secret file of mouse keys)")
        if path.stat().st_mode & stat.S_IROTH:
            log.warning("%s is readable by every user of this machine (chmod o-r it)", path)
    return public, secret_key


def load_learner_keys(keys_dir: str | os.PathLike) -> LearnerKeys:
    keys_dir = Path(keys_dir)
    public, secret = _load(keys_dir / "learner.key_secret", secret=True)
    allow_dir = keys_dir / ALLOW_DIR
    if not allow_dir.is_dir() or not allowed_keys(allow_dir):
        raise ValueError(f"no actor public keys in {allow_dir}/ (the allow-list: one *.key file per "
                         "actor identity, e.g. the actor.key that mouse keys writes there)")
    return LearnerKeys(keys_dir, public, secret, allow_dir)


def load_actor_keys(keys_dir: str | os.PathLike) -> ActorKeys:
    keys_dir = Path(keys_dir)
    learner_public, _ = _load(keys_dir / "learner.key", secret=False)
    public, secret = _load(keys_dir / "actor.key_secret", secret=True)
    return ActorKeys(keys_dir, learner_public, public, secret)


def allowed_keys(allow_dir: str | os.PathLike) -> set[bytes]:
    """The public keys of the allow-list (what the learner's authenticator accepts)."""
    try:
        return set(zmq.auth.load_certificates(allow_dir))
    except (OSError, ValueError) as e:  # the message names the file
        raise ValueError(f"bad allow-list {allow_dir}/: {e}") from None


# --- when the learner requires keys ------------------------------------------------------------

def is_loopback(address: str) -> bool:
    """True for tcp:// on 127.0.0.0/8, ::1 or localhost; False for any other host."""
    m = re.fullmatch(r"tcp://\[?([^\]]+?)\]?:\d+", address)
    if not m:
        return False
    host = m.group(1)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or a wildcard (*): reachable from elsewhere
        return False


def auth_enabled(mode: str, address: str) -> bool:
    """learner.auth: "on", "off", or "auto" = on unless the learner listens on loopback only.

    inproc:// sockets never leave the process: they have no handshake and need no keys.
    """
    if address.startswith("inproc://"):
        return False
    return mode == "on" or (mode == "auto" and not is_loopback(address))


def learner_keys(mode: str, keys_dir: str, address: str, run_dir: Path) -> LearnerKeys | None:
    """The learner's keys for ``address`` (None when open), created in ``keys_dir`` when absent.

    ``keys_dir`` "" means RUN_DIR/keys, so a learner on a cluster interface works with no
    set-up: it makes its keys there and tells how to start actors with them.
    """
    if not auth_enabled(mode, address):
        why = ("in-process sockets" if address.startswith("inproc://") else
               "learner.auth=off" if mode == "off" else "loopback only")
        log.info("open: %s, no CurveZMQ keys (learner.auth=%s, %s)", why, mode, address)
        return None
    path = Path(keys_dir) if keys_dir else run_dir / "keys"
    if not has_keys(path):
        create_keys(path)
        log.info("created CurveZMQ keys in %s (actors need learner.key, actor.key, actor.key_secret)", path)
    keys = load_learner_keys(path)
    log.info("CurveZMQ on: only actors whose public key is in %s/ may join", keys.allow_dir)
    return keys


def refusal_message(address: str, reason: str, keys: ActorKeys | None) -> str:
    """One line for an actor whose handshakes with ``address`` fail (see transport.HandshakeWatch)."""
    if keys is None:
        return f"the learner at {address} refused the connection: it requires CurveZMQ keys; {ACTOR_HINT}"
    if reason == "no_curve":
        return (f"the learner at {address} does not use CurveZMQ (learner.auth off?), but this actor "
                f"was given --keys {keys.dir}: it talks only to the learner whose key is in learner.key")
    if reason == "unknown_key":
        return (f"the learner at {address} refused this actor's key ({keys.dir}/actor.key is not in "
                "its allow-list, the learner's KEYS_DIR/actors/)")
    return (f"CurveZMQ handshake with the learner at {address} failed: it is not the learner whose "
            f"public key is {keys.dir}/learner.key (new keys? copy the learner's current ones)")
