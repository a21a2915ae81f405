from __future__ import annotations

import pytest

STORY = (
    "小明背着书包走进村口，老王正坐在槐树下抽烟。王伯笑着说：“小明，你又来看你爷爷了？”小明点点头。\n"
    "老王站起来，拍了拍小明的肩膀：“走，带你去河边钓鱼。”小明高兴地跳了起来。\n"
    "傍晚，王伯在河边等他们。老王钓到一条大鱼，小明拍手大笑。王伯说：“今天的晚饭有着落了！”"
)


@pytest.fixture
def story() -> str:
    return STORY


@pytest.fixture(autouse=True)
def _built_in_styles(manga_shonen):
    return manga_shonen
