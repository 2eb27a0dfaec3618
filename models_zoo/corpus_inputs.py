"""Realistic material for the real-model corpus: photos, scans, speech and sentences.

Every input the corpus feeds a model is built here from real content, the way the model's own
package prepares it: scikit-image's sample photos and scanned pages (shipped inside its wheel),
English speech synthesized by espeak-ng (shipped as ``data/speech_en.npz``), and sentences
encoded by the package's own vocabulary code. ``seed`` picks which photo, which stretch of
speech, which sentence, so several feeds differ the way a user's data does.

The speech clip was made once with
``espeak-ng -v en-us -s 150 -w speech.wav "The quick brown fox jumps over the lazy dog. Please
compress this model without changing what it hears."`` and resampled from 22.05 to 16 kHz
(scipy.signal.resample_poly 160/441), int16: 3.6 s, speech with silence at both ends.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from onnxc.errors import OnnxcError

_DATA = Path(__file__).parent / "data"
# The first four of each are the corpus's default feeds; seeds 4 and up add more of the same kinds
# (``benchmarks/corpus.py --feeds 8``) without changing what the first four judge.
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "immunohistochemistry", "hubble_deep_field",
           "retina")
_SCANS = ("page", "text", "camera", "page-upside-down", "words", "coins", "text-upside-down", "clock")

SENTENCES_EN = (
    "The quick brown fox jumps over the lazy dog.",
    "Please compress this model without changing what it hears.",
    "A graph compiler rewrites the network before it is deployed.",
    "Rain is expected in the north of the country tomorrow afternoon.",
)
SENTENCES_TH = (
    "ภาษาไทยเป็นภาษาที่มีวรรณยุกต์และไม่มีการเว้นวรรคระหว่างคำ",
    "วันนี้อากาศดีมากเราจึงไปเดินเล่นที่สวนสาธารณะใกล้บ้าน",
    "นักเรียนกำลังอ่านหนังสือในห้องสมุดของมหาวิทยาลัย",
    "รถไฟฟ้าสายใหม่จะเปิดให้บริการในเดือนหน้า",
)
SENTENCES_AR = (
    "ذهب الولد الى المدرسة في الصباح الباكر",
    "قرأت الطالبة الكتاب في المكتبة العامة",
    "يحب الناس السفر في فصل الربيع",
    "كتب المعلم الدرس على السبورة",
)
NAMES_AR = ("محمد عبد الله", "فاطمة الزهراء", "عبد الرحمن بن عوف", "خديجة بنت خويلد")
# Printed words (captcha-style text for recognizers and text/icon detectors), from the English sentences.
_WORDS = tuple(word.strip(".,") for sentence in SENTENCES_EN for word in sentence.split() if len(word) >= 4)
WORDS_RU = ("переписывание", "подоконник", "безответственность", "разговаривать")


def _skimage_data():
    try:
        import skimage.data
    except ImportError:
        raise OnnxcError("the real-model corpus builds its images from scikit-image: pip install scikit-image") from None
    return skimage.data


@lru_cache(maxsize=None)
def _load_image(name: str) -> np.ndarray:
    if name == "motorcycle":
        return np.asarray(_skimage_data().stereo_motorcycle()[0])
    return np.asarray(getattr(_skimage_data(), name)())


def photo(seed: int) -> np.ndarray:
    """A natural RGB photo, uint8 [H, W, 3]: astronaut, coffee, chelsea (a cat), rocket; then a
    motorcycle, a stained tissue slide, the Hubble deep field, a retina."""
    return _load_image(_PHOTOS[seed % len(_PHOTOS)])


def scan(seed: int) -> np.ndarray:
    """A grayscale scan, uint8 [H, W]: a printed page, a text sample, the cameraman (no text), the
    page upside down (what orientation classifiers exist for); then printed words scattered on a
    light page, coins, the text sample upside down, a clock."""
    name = _SCANS[seed % len(_SCANS)]
    if name.endswith("-upside-down"):
        return _load_image(name.removesuffix("-upside-down"))[::-1, ::-1]
    if name == "words":
        return _words_page(seed)
    return _load_image(name)


def printed_word(seed: int, height: int = 64) -> np.ndarray:
    """A word printed black on white in Pillow's built-in font, uint8 [height, W], slightly slanted
    and speckled as captchas are; ``seed`` picks the word, slant and speckle."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    word = _WORDS[seed % len(_WORDS)]
    font = ImageFont.load_default(size=int(height * 0.7))
    left, top, right, bottom = font.getbbox(word)
    image = Image.new("L", (right - left + height // 2, height), 255)
    ImageDraw.Draw(image).text((height // 4 - left, (height - (bottom - top)) // 2 - top), word, font=font, fill=0)
    image = image.transform(image.size, Image.Transform.AFFINE, (1, rng.uniform(-0.2, 0.2), 0, 0, 1, 0), fillcolor=255)
    pixels = np.asarray(image).astype(np.float64)
    speckle = rng.random(pixels.shape) < 0.02
    pixels[speckle] = rng.uniform(0, 255, int(speckle.sum()))
    return pixels.astype(np.uint8)


def _words_page(seed: int) -> np.ndarray:
    """Six printed words at scattered places on a 416 x 416 light page, uint8."""
    rng = np.random.default_rng(seed)
    page = np.full((416, 416), 235, np.uint8)
    for k in range(6):
        word = printed_word(seed * 7 + k, height=int(rng.integers(32, 64)))[:, :400]
        y, x = int(rng.integers(0, 416 - word.shape[0])), int(rng.integers(0, 416 - word.shape[1] + 1))
        page[y:y + word.shape[0], x:x + word.shape[1]] = np.minimum(page[y:y + word.shape[0], x:x + word.shape[1]], word)
    return page


def text_line(seed: int) -> np.ndarray:
    """One printed line, uint8 [h, W]. Seeds 0-3: cut from the scanned page as a text detector
    would crop it (rows whose share of dark pixels marks ink, bands closer than 4 rows merged, 3
    rows of margin; the page has three such lines, so seed 3 is seed 0's); seeds 4 and up: a
    printed word (:func:`printed_word`)."""
    if seed >= 4:
        return printed_word(seed)
    page = _load_image("page")
    inked = np.flatnonzero((page < 100).mean(axis=1) > 0.02)
    bands, start = [], inked[0]
    for previous, row in zip(inked[:-1], inked[1:]):
        if row - previous > 4:
            bands.append((start, previous))
            start = row
    bands.append((start, inked[-1]))
    bands = [(top, bottom) for top, bottom in bands if bottom - top >= 8]
    top, bottom = bands[seed % len(bands)]
    return page[max(0, top - 3):bottom + 4]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (uint8, HW or HWC) resized to ``height`` x ``width``, float64 0..255."""
    from skimage.transform import resize as sk_resize

    out_shape = (height, width) + image.shape[2:]
    return sk_resize(image.astype(np.float64), out_shape, order=1, preserve_range=True, anti_aliasing=True)


def nchw(image: np.ndarray, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale: float = 1 / 255.0) -> np.ndarray:
    """HWC image to NCHW float32 ``(image * scale - mean) / std``."""
    scaled = (image * scale - np.asarray(mean)) / np.asarray(std)
    return scaled.transpose(2, 0, 1)[None].astype(np.float32)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2) if gray.ndim == 2 else gray


@lru_cache(maxsize=1)
def speech() -> np.ndarray:
    """The shipped espeak-ng clip at 16 kHz, float32 in [-1, 1]."""
    with np.load(_DATA / "speech_en.npz") as data:
        return (data["audio"].astype(np.float32) / 32768.0).copy()


def speech_window(seed: int, samples: int) -> np.ndarray:
    """``samples`` samples of the clip; seeds step through it so some windows are speech, the
    first is the leading silence and others straddle a pause."""
    clip = speech()
    starts = np.linspace(0, len(clip) - samples, 5).astype(int)
    start = starts[seed % len(starts)]
    return clip[start:start + samples]


def log_mel(audio: np.ndarray, *, n_fft: int, hop: int, win: int, n_mels: int, window: str = "hann",
            log=np.log10, floor: float = 1e-10, htk: bool = False) -> np.ndarray:
    """[frames, n_mels] log mel power spectrogram (librosa), no centre padding."""
    import warnings

    import librosa

    with warnings.catch_warnings():
        # 128 mels over a 400-point FFT leave the lowest filters empty: the model was trained so.
        warnings.filterwarnings("ignore", "Empty filters detected", UserWarning)
        spectrum = librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=n_fft, hop_length=hop, win_length=win,
                                                  n_mels=n_mels, window=window, center=False, power=2.0, htk=htk)
    return log(spectrum + floor).T.astype(np.float32)


def eeg(seed: int, channels: int, samples: int, rate: float = 250.0) -> np.ndarray:
    """Scalp-EEG-like signal [channels, samples] in microvolts: 1/f background, an alpha rhythm
    and, for odd seeds, a 12-14 Hz sleep-spindle burst in the middle (what the detectors look for)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    spectrum = rng.normal(size=(channels, samples // 2 + 1)) + 1j * rng.normal(size=(channels, samples // 2 + 1))
    freqs = np.fft.rfftfreq(samples, 1 / rate)
    spectrum /= np.maximum(freqs, 0.5)
    background = np.fft.irfft(spectrum, n=samples)
    background *= 20.0 / background.std()
    signal = background + 10 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (channels, 1)))
    if seed % 2:
        centre = t[samples // 2]
        envelope = np.exp(-((t - centre) ** 2) / (2 * 0.25 ** 2))
        signal += 40 * envelope * np.sin(2 * np.pi * 13 * t)
    return signal.astype(np.float32)
