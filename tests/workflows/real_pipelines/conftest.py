from __future__ import annotations

from pathlib import Path

import pytest

STORY = (
    "小明背着书包走进村口，老王正坐在槐树下抽烟。王伯笑着说：“小明，你又来看你爷爷了？”小明点点头。\n"
    "老王站起来，拍了拍小明的肩膀：“走，带你去河边钓鱼。”小明高兴地跳了起来。\n"
    "傍晚，王伯在河边等他们。老王钓到一条大鱼，小明拍手大笑。王伯说：“今天的晚饭有着落了！”"
)


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A fresh MEDIA_ROOT (project storage) and CACHE_DIR (the images file cache) for one test."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    settings.CACHE_DIR = tmp_path / "cache"
    settings.CACHE_DIR.mkdir()
    return root


@pytest.fixture
def story() -> str:
    return STORY
