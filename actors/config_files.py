"""Reads the configuration files from disk and hands their text to `core.config`.

The only file I/O of the configuration: core stays pure, this module knows paths, encodings and
the real time-zone database.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from core.config import (
    CONFIG_FILES,
    DEMO_PASSES_FILE,
    QR_KEYS_FILE,
    ConfigError,
    parse_demo_passes,
    parse_province,
)
from core.models import PassRecord, Province

# The sample province shipped in the repository: the embedded default.
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def load_province(config_dir: Path) -> Province:
    """Loads and validates province.toml, venues.toml and products.toml from `config_dir`, and
    qr_keys.toml when the directory has one."""
    texts = {name: _read(config_dir, name) for name in CONFIG_FILES}
    if (config_dir / QR_KEYS_FILE).is_file():
        texts[QR_KEYS_FILE] = _read(config_dir, QR_KEYS_FILE)
    return parse_province(texts, ZoneInfo)


def load_demo_passes(config_dir: Path, province: Province | None = None) -> list[PassRecord]:
    """The named demo passes of `config_dir`; none when the directory ships no demo_passes.toml."""
    if not (config_dir / DEMO_PASSES_FILE).is_file():
        return []
    return parse_demo_passes(_read(config_dir, DEMO_PASSES_FILE), province)


def _read(config_dir: Path, name: str) -> str:
    path = config_dir / name
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", f"file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read {path}: {exc.strerror}") from None
