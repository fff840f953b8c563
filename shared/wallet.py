"""Load a hotkey once, and create wallets without a prompt for the local subnet.

``http_auth.sign(wallet)`` re-reads the key file on every call (about 30×
slower than signing with the loaded keypair), so processes call
``load_hotkey`` at start-up and keep the keypair.
"""

from __future__ import annotations

import os
from typing import Any

import bittensor as bt


def load_hotkey(name: str, hotkey: str, path: str) -> Any:
    """The hotkey ``Keypair`` of wallet ``name``/``hotkey`` under ``path``."""
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=os.path.expanduser(path))
    try:
        return wallet.hotkey
    except FileNotFoundError:
        raise SystemExit(
            f"no hotkey file for wallet {name!r}/{hotkey!r} under {path}: create it with btcli, "
            "or run the local subnet (python -m localnet) which creates its own wallets"
        ) from None


def ensure_wallet(name: str, hotkey: str, path: str) -> tuple[str, str]:
    """Create an unencrypted wallet if missing (local subnet only); return (coldkey, hotkey) ss58."""
    path = os.path.expanduser(path)
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=path)
    try:
        return wallet.coldkeypub.ss58_address, wallet.hotkey.ss58_address
    except FileNotFoundError:
        created = bt.wallets.create(
            name, hotkey, path, use_password=False, overwrite=True, on_mnemonic=lambda role, mnemonic: None
        )
        return created.coldkeypub.ss58_address, created.hotkey.ss58_address
