"""`telecom-pay prompts build`: every prompt of config/prompts.toml as a WAV
file Asterisk can play, so a deployment hears the menus before anyone has
recorded them (and a recording studio gets the list of what to record).

Asterisk's `format_wav` plays 8 kHz, 16-bit, mono PCM; espeak-ng speaks at
22,050 Hz. Dropping samples to get from one to the other folds everything
above 4 kHz back into the band a telephone carries (sibilants become
whistles), so the speech is low-pass filtered while it is resampled: by sox
where it is installed, else by the small windowed-sinc filter below.
"""
from __future__ import annotations

import math
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

RATE = 8000                              # what Asterisk's format_wav plays
VOICES = {"zh": "cmn", "en": "en"}       # espeak-ng voice for each prompt language

# The words Asterisk's SAY NUMBER and SAY DIGITS string together, by the file
# names its main/say.c asks for in <sounds>/<lang>/digits/: English counts
# 0-19, tens, hundred, thousand, million; Chinese 0-9, the tens (十, 二十 ...
# 九十; 13 is 十 then 三), 百, 千, 万, 亿. Asterisk ships recordings of these
# for English only (a separate download) and none for Chinese: without
# them every amount the IVR speaks is silence.
_ZH_UNITS = "零一二三四五六七八九"
NUMBER_WORDS: dict[str, dict[str, str]] = {
    "en": {**{str(n): w for n, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen".split())},
        **{str(10 * n): w for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)},
        "hundred": "hundred", "thousand": "thousand", "million": "million", "billion": "billion",
        "minus": "minus", "star": "star", "pound": "pound"},
    "zh": {**{str(n): _ZH_UNITS[n] for n in range(10)}, "10": "十",
           **{str(10 * n): _ZH_UNITS[n] + "十" for n in range(2, 10)},
           "hundred": "百", "thousand": "千", "wan": "万", "yi": "亿",
           "minus": "负", "star": "星号", "pound": "井号"},
}


class BuildError(RuntimeError):
    """The build cannot go on: espeak-ng is missing or failed, a WAV came out wrong."""


class PromptTexts(Protocol):
    def names(self) -> list[str]: ...
    def text(self, name: str, lang: str) -> str: ...


@dataclass
class BuildReport:
    built: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    resampler: str = ""


def find_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise BuildError("espeak-ng is not installed (Debian: apt-get install espeak-ng); "
                         "no prompt was built")
    return path


def build(prompts: PromptTexts, out_dir: str | Path, *, source_mtime: float,
          langs: Iterable[str] = ("zh", "en"), espeak: str | None = None,
          resampler: str = "auto") -> BuildReport:
    """Writes OUT/<lang>/<name>.wav for each prompt whose file is missing or
    older than the prompts file (`source_mtime`): editing one text rebuilds
    them all, which is cheap, and an unchanged file costs nothing."""
    langs = list(langs)
    unknown = [lang for lang in langs if lang not in VOICES]
    if unknown:
        raise BuildError(f"no voice for language {', '.join(unknown)} (known: {', '.join(VOICES)})")
    resampler = _resampler(resampler)
    report = BuildReport(resampler=resampler)
    out = Path(out_dir)
    todo: list[tuple[str, str, Path]] = []
    for lang in langs:
        for name in prompts.names():
            target = out / lang / f"{name}.wav"
            if target.exists() and target.stat().st_mtime > source_mtime:
                report.up_to_date.append(target)
            else:
                todo.append((lang, name, target))
    if not todo:
        return report
    espeak = espeak or find_espeak()
    for lang, name, target in todo:
        target.parent.mkdir(parents=True, exist_ok=True)
        render(prompts.text(name, lang), VOICES[lang], target, espeak=espeak, resampler=resampler)
        report.built.append(target)
    return report


def build_digits(sounds_root: str | Path, *, langs: Iterable[str] = ("zh", "en"), espeak: str | None = None,
                 resampler: str = "auto") -> BuildReport:
    """Writes <sounds_root>/<lang>/digits/<name>.wav for every word SAY NUMBER
    and SAY DIGITS need that has no file yet in any format: a recording the
    deployment installed (Asterisk's own sounds, a studio's) is never
    replaced, and neither is a word built before."""
    langs = list(langs)
    unknown = [lang for lang in langs if lang not in NUMBER_WORDS]
    if unknown:
        raise BuildError(f"no number words for language {', '.join(unknown)} (known: {', '.join(NUMBER_WORDS)})")
    resampler = _resampler(resampler)
    report = BuildReport(resampler=resampler)
    todo: list[tuple[str, str, Path]] = []
    for lang in langs:
        folder = Path(sounds_root) / lang / "digits"
        for name, text in NUMBER_WORDS[lang].items():
            existing = sorted(folder.glob(f"{name}.*")) if folder.is_dir() else []
            if existing:
                report.up_to_date.append(existing[0])
            else:
                todo.append((lang, text, folder / f"{name}.wav"))
    if todo:
        espeak = espeak or find_espeak()
        for lang, text, target in todo:
            target.parent.mkdir(parents=True, exist_ok=True)
            render(text, VOICES[lang], target, espeak=espeak, resampler=resampler)
            report.built.append(target)
    return report


def _resampler(name: str) -> str:
    if name == "auto":
        return "sox" if shutil.which("sox") else "python"
    if name not in ("sox", "python"):
        raise BuildError(f"unknown resampler {name!r}")
    return name


def render(text: str, voice: str, target: Path, *, espeak: str, resampler: str) -> None:
    """Speaks `text` into `target`. The file appears whole or not at all (a
    temporary file renamed into place): a build cut short must not leave a
    truncated WAV that looks newer than the prompts and is skipped forever."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        spoken = Path(tmp) / "espeak.wav"
        ready = Path(tmp) / "ready.wav"
        # The text goes on stdin: a prompt starting with "-" is not an option.
        done = subprocess.run([espeak, "-v", voice, "-w", str(spoken)], input=text.encode("utf-8"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0 or not spoken.exists():
            raise BuildError(f"espeak-ng failed for {target.name} ({voice}): "
                             f"{done.stderr.decode(errors='replace').strip()}")
        if resampler == "sox":
            done = subprocess.run(["sox", str(spoken), "-r", str(RATE), "-c", "1", "-b", "16",
                                   "-e", "signed-integer", str(ready)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if done.returncode != 0:
                raise BuildError(f"sox failed for {target.name}: {done.stderr.decode(errors='replace').strip()}")
        else:
            rate, samples = read_pcm16(spoken)
            write_pcm16(ready, resample(samples, rate, RATE), RATE)
        check_playable(ready)
        os.replace(ready, target)


def read_pcm16(path: Path) -> tuple[int, array]:
    """Mono 16-bit samples of a WAV (several channels are averaged)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise BuildError(f"{path}: {8 * w.getsampwidth()}-bit audio, expected 16-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    samples = array("h")
    samples.frombytes(raw)
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = array("h", (sum(samples[i:i + channels]) // channels
                              for i in range(0, len(samples), channels)))
    return rate, samples


def write_pcm16(path: Path, samples: array, rate: int) -> None:
    data = array("h", samples)
    if sys.byteorder == "big":
        data.byteswap()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def check_playable(path: Path) -> None:
    """What Asterisk's format_wav accepts, checked before the file replaces a good one."""
    with wave.open(str(path), "rb") as w:
        got = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype())
        frames = w.getnframes()
    if got != (RATE, 1, 2, "NONE"):
        raise BuildError(f"{path}: {got} is not 8 kHz mono 16-bit PCM")
    if frames < RATE // 10:
        raise BuildError(f"{path}: {frames} samples, too short to be speech")


def resample(samples: Sequence[int], src: int, dst: int, *, zero_crossings: int = 16) -> array:
    """Rational-ratio resampling through a Blackman-windowed sinc low-pass
    (cut at 90 % of the lower Nyquist frequency; at 8 kHz flat to 3 kHz,
    -1.6 dB at 3.4 kHz, nothing left from 4 kHz up). The ratio is exact
    (22,050 to 8,000 is 441:160), so only `up` distinct filter phases exist
    and they are computed once; each output sample is then one dot product."""
    if src == dst:
        return array("h", samples)
    g = math.gcd(src, dst)
    up, down = dst // g, src // g               # output n sits at input position n * down / up
    fc = 0.9 * min(1.0, dst / src)              # cut-off, in cycles per 2 input samples
    half = zero_crossings / fc                  # filter half-width, in input samples
    k = math.ceil(half)
    table = []
    for phase in range(up):
        frac = phase / up
        taps = []
        for i in range(2 * k):                  # input k_i = base - k + 1 + i, at distance t
            t = frac + k - 1 - i
            if abs(t) >= half:
                taps.append(0.0)
                continue
            x = fc * t
            sinc = 1.0 if x == 0 else math.sin(math.pi * x) / (math.pi * x)
            r = t / half
            window = 0.42 + 0.5 * math.cos(math.pi * r) + 0.08 * math.cos(2 * math.pi * r)
            taps.append(sinc * window)
        total = sum(taps)                       # unity gain at DC for every phase
        table.append([tap / total for tap in taps])
    padded = [0] * k + list(samples) + [0] * k  # silence beyond both ends
    out = array("h")
    mul = operator.mul
    for n in range(len(samples) * up // down):
        base, phase = divmod(n * down, up)
        lo = base + 1                           # padded index of input base - k + 1
        v = sum(map(mul, table[phase], padded[lo:lo + 2 * k]))
        out.append(max(-32768, min(32767, round(v))))
    return out
