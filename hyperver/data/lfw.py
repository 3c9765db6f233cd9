"""LFW in its official layout: ``images/<Name>/<Name>_NNNN.jpg`` plus the View 1/2 list files.

List formats (from LFW's README):
- pairs.txt (View 2): header ``<folds> <n>``, then per fold n matched lines ``name i j`` and
  n mismatched lines ``name1 i name2 j``. pairsDevTrain/Test (View 1): header ``<n>``, then n
  matched and n mismatched lines.
- people.txt (View 2): header ``<sets>``, then per set a count line and ``name count`` lines.
  peopleDevTrain/Test (View 1): header ``<count>``, then ``name count`` lines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from .folder import _require_dir
from .records import ImageRecord


@dataclass(frozen=True)
class Pair:
    a: ImageRecord
    b: ImageRecord
    same: bool
    fold: int          # 1-based fold index (View 1 lists are one fold)


def lfw_image_path(images_root: Path, name: str, number: int) -> Path:
    return images_root / name / f"{name}_{number:04d}.jpg"


class _Lines:
    """Numbered, whitespace-split non-empty lines, with errors that point at file:line."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise DatasetError(f"LFW list file not found: {path}")
        self.path = path
        self.items = [(i + 1, line.split()) for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
        self.pos = 0

    def next(self, what: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.items):
            raise DatasetError(f"{self.path}: file ends early, expected {what}")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def peek_width(self) -> int:
        """Number of fields on the next line (0 at the end of the file)."""
        return len(self.items[self.pos][1]) if self.pos < len(self.items) else 0

    def error(self, lineno: int, msg: str) -> DatasetError:
        return DatasetError(f"{self.path}:{lineno}: {msg}")

    def ints(self, lineno: int, fields: list[str], what: str) -> list[int]:
        try:
            return [int(f) for f in fields]
        except ValueError:
            raise self.error(lineno, f"expected {what}, got {' '.join(fields)!r}") from None

    def done(self) -> None:
        if self.pos != len(self.items):
            lineno, fields = self.items[self.pos]
            raise self.error(lineno, f"unexpected extra line {' '.join(fields)!r}")


class LFWDataset:
    """The LFW tree plus its official lists. ``root`` holds ``images/`` and the .txt files."""

    def __init__(self, root: str | Path, name: str = "lfw"):
        self.root = _require_dir(Path(root), "LFW")
        self.images_root = self.root / "images"
        if not self.images_root.is_dir():
            raise DatasetError(f"LFW images folder not found: {self.images_root}")
        self.name = name

    def record(self, person: str, number: int) -> ImageRecord:
        return ImageRecord(lfw_image_path(self.images_root, person, number), person, self.name)

    def records(self) -> list[ImageRecord]:
        out = []
        for person_dir in sorted(p for p in self.images_root.iterdir() if p.is_dir()):
            for img in sorted(person_dir.glob("*.jpg")):
                out.append(ImageRecord(img, person_dir.name, self.name))
        return out

    # -- pairs -------------------------------------------------------------------------------
    def read_pairs(self, filename: str = "pairs.txt") -> list[list[Pair]]:
        """Pairs grouped by fold. View 2 gives 10 folds; View 1 files give one."""
        lines = _Lines(self.root / filename)
        lineno, header = lines.next("a header")
        nums = lines.ints(lineno, header, "a header of 1 or 2 integers")
        if len(nums) == 2:
            n_folds, per_fold = nums
        elif len(nums) == 1:
            n_folds, per_fold = 1, nums[0]
        else:
            raise lines.error(lineno, f"expected a header of 1 or 2 integers, got {' '.join(header)!r}")
        folds = []
        for fold in range(1, n_folds + 1):
            pairs = []
            for same in (True, False):
                for _ in range(per_fold):
                    pairs.append(self._parse_pair(lines, fold, same))
            folds.append(pairs)
        lines.done()
        return folds

    def _parse_pair(self, lines: _Lines, fold: int, same: bool) -> Pair:
        kind = "matched pair 'name i j'" if same else "mismatched pair 'name1 i name2 j'"
        lineno, f = lines.next(kind)
        if same and len(f) == 3:
            i, j = lines.ints(lineno, f[1:], kind)
            a, b = self.record(f[0], i), self.record(f[0], j)
        elif not same and len(f) == 4:
            i, j = lines.ints(lineno, [f[1], f[3]], kind)
            a, b = self.record(f[0], i), self.record(f[2], j)
        else:
            raise lines.error(lineno, f"malformed line, expected a {kind}, got {' '.join(f)!r}")
        return Pair(a, b, same, fold)

    # -- people ------------------------------------------------------------------------------
    def read_people(self, filename: str = "people.txt") -> list[list[tuple[str, int]]]:
        """People sets as lists of (name, image count). View 2 gives 10 sets; View 1 files give one."""
        lines = _Lines(self.root / filename)
        lineno, header = lines.next("a header")
        (first,) = lines.ints(lineno, header, "a single integer header")
        # View 2 starts with the number of sets, then a count line per set; View 1 has one count
        # followed directly by 'name count' lines. The line after the header tells which.
        view2 = lines.peek_width() == 1
        n_sets, sets = (first, []) if view2 else (1, [])
        for _ in range(n_sets):
            if view2:
                lineno, f = lines.next("a set size")
                (count,) = lines.ints(lineno, f, "a set size")
            else:
                count = first
            people = []
            for _ in range(count):
                lineno, f = lines.next("'name count'")
                if len(f) != 2:
                    raise lines.error(lineno, f"malformed line, expected 'name count', got {' '.join(f)!r}")
                (n,) = lines.ints(lineno, f[1:], "an image count")
                people.append((f[0], n))
            sets.append(people)
        lines.done()
        return sets

    def set_records(self, people: list[tuple[str, int]]) -> list[ImageRecord]:
        return [self.record(name, i) for name, n in people for i in range(1, n + 1)]
