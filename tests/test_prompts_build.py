"""`telecom-pay prompts build`: the prompts become WAV files Asterisk plays
(8 kHz, 16-bit, mono PCM), spoken by the real espeak-ng (make test installs
it), rebuilt only when the prompts file changes."""
import math
import os
import shutil
import subprocess
import sys
import wave
from array import array
from pathlib import Path

import pytest

from telecom_pay.menus.build import RATE, BuildError, build, read_pcm16, resample
from telecom_pay.menus.prompts import Prompts

# The leading "-" is no typo: a text that looks like an option still gets spoken.
PROMPTS = """\
[main_menu]
zh = "欢迎使用话费支付。查询余额请按1，付款请按2。"
en = "Welcome to telecom pay. For your balance press 1. To pay press 2."

[enter_pin]
zh = "请输入六位密码，以井号键结束。"
en = "-Please enter your six digit PIN, then press hash."
"""


def write_prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.toml"
    path.write_text(PROMPTS, encoding="utf-8")
    return path


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telecom_pay.cli", "prompts", "build", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def rms(samples) -> float:
    return math.sqrt(sum(x * x for x in samples) / len(samples))


def assert_playable(path: Path) -> float:
    """The header Asterisk's format_wav needs, and speech in it; returns seconds."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (8000, 1, 2, "NONE")
        seconds = w.getnframes() / w.getframerate()
    assert 1.0 < seconds < 20.0, f"{path}: {seconds:.2f} s"
    _, samples = read_pcm16(path)
    assert rms(samples) > 500, f"{path} is nearly silent"
    return seconds


def test_builds_every_prompt_in_every_language_then_only_what_changed(tmp_path):
    source = write_prompts(tmp_path)
    out = tmp_path / "sounds"
    first = cli(str(out), "--prompts", str(source))
    assert first.returncode == 0, first.stderr
    assert "4 built, 0 up to date" in first.stdout
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"zh/main_menu.wav", "zh/enter_pin.wav", "en/main_menu.wav", "en/enter_pin.wav"}
    durations = {name: assert_playable(out / name) for name in files}
    # Mandarin and English voices say different things at different lengths.
    assert (out / "zh/main_menu.wav").read_bytes() != (out / "en/main_menu.wav").read_bytes()
    assert durations["zh/main_menu.wav"] != durations["en/main_menu.wav"]

    before = {name: (out / name).stat().st_mtime_ns for name in files}
    again = cli(str(out), "--prompts", str(source))
    assert again.returncode == 0, again.stderr
    assert "0 built, 4 up to date" in again.stdout
    assert before == {name: (out / name).stat().st_mtime_ns for name in files}

    later = max(before.values()) / 1e9 + 5            # the prompts file is edited after the build
    os.utime(source, (later, later))
    edited = cli(str(out), "--prompts", str(source), "--lang", "en")
    assert edited.returncode == 0, edited.stderr
    assert "2 built, 0 up to date (en;" in edited.stdout
    assert (out / "zh/main_menu.wav").stat().st_mtime_ns == before["zh/main_menu.wav"]
    assert (out / "en/main_menu.wav").stat().st_mtime_ns != before["en/main_menu.wav"]


def test_both_resamplers_give_the_same_speech(tmp_path):
    assert shutil.which("sox"), "make test installs sox (scripts/ensure-services.sh)"
    prompts = Prompts.load(write_prompts(tmp_path))
    by_sox = build(prompts, tmp_path / "sox", source_mtime=0, langs=["zh"], resampler="sox")
    by_python = build(prompts, tmp_path / "py", source_mtime=0, langs=["zh"], resampler="python")
    assert (by_sox.resampler, by_python.resampler) == ("sox", "python")
    for a, b in zip(sorted(by_sox.built), sorted(by_python.built)):
        assert abs(assert_playable(a) - assert_playable(b)) < 0.01
        ra, rb = rms(read_pcm16(a)[1]), rms(read_pcm16(b)[1])
        assert abs(ra - rb) / ra < 0.1, (a.name, ra, rb)


def sine(freq: float, rate: int = 22050, seconds: float = 1.0) -> array:
    return array("h", (round(10000 * math.sin(2 * math.pi * freq * n / rate)) for n in range(int(rate * seconds))))


@pytest.mark.parametrize("freq, gain", [(300, 1.0), (1000, 1.0), (3000, 1.0), (5000, 0.0), (8000, 0.0)])
def test_python_resampler_keeps_the_voice_band_and_removes_what_would_alias(freq, gain):
    """A 5 kHz tone has no place at 8 kHz: taking every 2.76th sample would
    fold it to 3 kHz at full strength; the filter removes it."""
    tone = sine(freq)
    out = resample(tone, 22050, RATE)
    assert len(out) == RATE
    measured = rms(out[200:-200]) / rms(tone)
    assert abs(measured - gain) < 0.02, measured


def test_espeak_missing_is_an_error_not_an_empty_directory(tmp_path):
    source = write_prompts(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    done = cli(str(tmp_path / "sounds"), "--prompts", str(source), env={**os.environ, "PATH": str(empty)})
    assert done.returncode == 1
    assert "espeak-ng is not installed" in done.stderr
    assert not (tmp_path / "sounds").exists()


def test_a_failing_synthesis_leaves_no_file_behind(tmp_path):
    """A WAV left half-written would look newer than the prompts and be kept."""
    broken = tmp_path / "espeak-ng"
    broken.write_text("#!/bin/sh\necho 'no voice' >&2\nexit 1\n")
    broken.chmod(0o755)
    prompts = Prompts.load(write_prompts(tmp_path))
    with pytest.raises(BuildError, match="espeak-ng failed for enter_pin.wav"):
        build(prompts, tmp_path / "sounds", source_mtime=0, langs=["en"], espeak=str(broken))
    assert [p for p in (tmp_path / "sounds").rglob("*")] == [tmp_path / "sounds" / "en"]


def test_unknown_language_is_refused(tmp_path):
    done = cli(str(tmp_path), "--prompts", str(write_prompts(tmp_path)), "--lang", "fr")
    assert done.returncode == 2 and "zh, en" in done.stderr


def test_digits_are_the_words_asterisk_says_numbers_with_and_recordings_stay(tmp_path):
    """SAY NUMBER 120 on a zh channel plays digits/1, digits/hundred, digits/20
    from <sounds>/zh/digits/: each must exist, and a recording already there
    (Asterisk's own .gsm, a studio's .wav) is never overwritten."""
    sounds = tmp_path / "sounds"
    recorded = sounds / "en" / "digits" / "1.gsm"
    recorded.parent.mkdir(parents=True)
    recorded.write_bytes(b"recorded")
    done = subprocess.run([sys.executable, "-m", "telecom_pay.cli", "prompts", "digits", str(sounds)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    zh = {p.stem for p in (sounds / "zh" / "digits").glob("*.wav")}
    en = {p.stem for p in (sounds / "en" / "digits").glob("*.wav")}
    assert {"0", "1", "9", "10", "20", "90", "hundred", "thousand", "wan", "yi"} <= zh
    assert {"0", "2", "13", "19", "20", "90", "hundred", "thousand", "million"} <= en
    assert "1" not in en and recorded.read_bytes() == b"recorded"
    assert f"{len(zh) + len(en)} built, 1 kept" in done.stdout
    for path in (sounds / "zh" / "digits" / "hundred.wav", sounds / "en" / "digits" / "thousand.wav"):
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            assert w.getnframes() > 8000 // 5          # a spoken word, not a click
    again = subprocess.run([sys.executable, "-m", "telecom_pay.cli", "prompts", "digits", str(sounds), "--lang", "zh"],
                           capture_output=True, text=True, timeout=120)
    assert f"0 built, {len(zh)} kept" in again.stdout
