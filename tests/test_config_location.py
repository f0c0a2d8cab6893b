"""Which dma.conf is read (SPEC 2.1, 8): -C first, then $DMA_CONF, then /etc/dma/dma.conf,
then the embedded default; relative paths in it follow the file."""

from __future__ import annotations

from pathlib import Path

from conftest import DmaSite, login_name


def _config(site: DmaSite, name: str) -> tuple[Path, Path]:
    """A dma.conf named ``name`` with its own spool; returns (config, spool)."""
    spool = site.root / f"spool-{name}"
    config = site.root / f"{name}.conf"
    site.write_config(f"SPOOLDIR {spool}\n", path=config)
    return config, spool


def _queued_in(spool: Path) -> int:
    """How many Q files ``spool`` holds (0 when it was never made)."""
    if not spool.is_dir():
        return 0
    return sum(1 for entry in spool.iterdir() if entry.name.startswith("Q"))


def test_dma_conf_names_the_configuration(site: DmaSite) -> None:
    """With no -C, $DMA_CONF chooses the configuration file."""
    config, spool = _config(site, "env")
    done = site.run([login_name()], b"x\n", use_config=False, env={"DMA_CONF": str(config)})
    assert done.returncode == 0, done.stderr
    assert _queued_in(spool) == 1


def test_dash_c_wins_over_dma_conf(site: DmaSite) -> None:
    """-C is used even when $DMA_CONF names another file."""
    from_env, env_spool = _config(site, "env")
    from_option, option_spool = _config(site, "option")
    done = site.run(["-C", str(from_option), login_name()], b"x\n", use_config=False,
                    env={"DMA_CONF": str(from_env)})
    assert done.returncode == 0, done.stderr
    assert (_queued_in(option_spool), _queued_in(env_spool)) == (1, 0)


def test_missing_dma_conf_file_is_an_error(site: DmaSite) -> None:
    """A $DMA_CONF that names no file stops with exit 66 naming it; nothing is queued
    anywhere (no silent fall-back to another configuration)."""
    missing = site.root / "nowhere.conf"
    done = site.run([login_name()], b"x\n", use_config=False, env={"DMA_CONF": str(missing)})
    assert done.returncode == 66
    assert str(missing).encode() in done.stderr and b"DMA_CONF" in done.stderr
    assert not site.spool.exists()


def test_relative_paths_follow_the_config_file(site: DmaSite) -> None:
    """SPOOLDIR given as a relative path is taken relative to the dma.conf's directory,
    not to the caller's working directory."""
    conf_dir = site.root / "etc"
    conf_dir.mkdir()
    config = conf_dir / "dma.conf"
    config.write_text("SPOOLDIR queue\nDEFER\n")
    done = site.run([login_name()], b"x\n", config=config)
    assert done.returncode == 0, done.stderr
    assert _queued_in(conf_dir / "queue") == 1
