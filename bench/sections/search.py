"""Target 7: recall. Lexical search p50 and p99 over one owner's messages (1,000,000 in the full run:
``BENCH_SEARCH_MESSAGES`` overrides it), and what indexing adds to the append path: an append with the message
indexed against one with ``search.index_messages`` off, in turn on the same context (ratio <= 1.3).

The messages are built by the database in big batches (not through the API): a pool of Chinese sentences made
of a fixed vocabulary (seeded), cut into index words once in Python, spread over the rows, and the index rows
written from the messages by one INSERT … SELECT per batch, as the append writes them.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable

from bench.core import Result, Sizes, median, percentile, result, timed, timed_pair

POOL_SIZE = 2_000
MESSAGES_PER_CONTEXT = 10_000
# Words of a comic's chats: names, places, things, actions (a sentence takes 6 to 10 of them).
VOCABULARY = (  # noqa: SIM905 - a list literal of a hundred words would not fit the page
    "林小雨 沈默 老周 苏婉 团子 黑衣人 李捕头 孟婆婆 石头 韩锋 赵德全 柳青青 陈九 阿强 赵夫人 "
    "茶馆 古井 县衙 竹林 石桥 山路 悬崖 库房 地道 石室 戏台 长街 后院 渡口 城门 药铺 铁匠铺 "
    "红伞 旧剑 铜牌 飞镖 药箱 账本 花灯 龙灯 折扇 斗篷 竹签 弹弓 铁丝 箱子 嫁妆 茶碗 剑穗 扳指 "
    "下雨 起火 受伤 中毒 采药 算命 偷看 追查 失踪 开锁 唱戏 打铁 逃走 对决 救人 埋伏 揭开 "
    "夜里 清晨 黄昏 元宵 寿宴 三更 月光 大雨 浓雾 雪夜 "
    "分镜 特写 俯视 跨页 水墨 冷色 暖色 构图 线索 伏笔 结局 反转 节奏 对话 旁白"
).split()


# Two-character words made of common characters extend the vocabulary to a chat's size; words are drawn with
# Zipf's weights (1 / rank), the named words of VOCABULARY first, so a few words are in many messages and most in
# few, for the messages and the queries alike.
_CHARACTERS = "山水风云雨雪花月星夜灯火石桥门窗刀剑书信茶酒马车船镇街巷井楼院墙竹松梅兰笑哭走跑看听说想等找"
SYNTHETIC_WORDS = 1_500


def _vocabulary() -> tuple[list[str], list[float]]:
    chooser = random.Random(5)
    words = list(VOCABULARY)
    while len(words) < len(VOCABULARY) + SYNTHETIC_WORDS:
        word = chooser.choice(_CHARACTERS) + chooser.choice(_CHARACTERS)
        if word not in words:
            words.append(word)
    return words, [1 / (rank + 1) for rank in range(len(words))]


def _pool() -> list[str]:
    chooser = random.Random(7)
    words, weights = _vocabulary()
    return ["\uff0c".join(chooser.choices(words, weights, k=chooser.randint(6, 10))) + "。" for _ in range(POOL_SIZE)]


def _fill(*, owner_id: int, project_id: str, count: int, log: Callable[[str], None]) -> None:
    """``count`` messages of the owner (in contexts of MESSAGES_PER_CONTEXT, archived as a long chat's are) and
    their index rows."""
    from django.db import connection, transaction
    from django.utils import timezone

    from memory_app.models import ContextMessage, ConversationContext, SearchEntry
    from memory_app.search_text import index_tokens

    pool = _pool()
    tokens = [index_tokens(text) for text in pool]
    hashes = [hashlib.sha256(text.encode()).hexdigest() for text in pool]
    messages = ContextMessage._meta.db_table
    entries = SearchEntry._meta.db_table
    now = timezone.now()
    contexts = []
    for number in range(0, count, MESSAGES_PER_CONTEXT):
        size = min(MESSAGES_PER_CONTEXT, count - number)
        context = ConversationContext.objects.create(
            owner_id=owner_id, project_id=project_id, max_messages=20, max_tokens=32768, next_position=size
        )
        contexts.append((context, size))
    for index, (context, size) in enumerate(contexts):
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {messages} (context_id, position, role, content, token_count, created_at, "  # noqa: S608
                    "archived, is_summary, unanswered, metadata) "
                    "SELECT %s, g, CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END, (%s::text[])[1 + g %% %s], "
                    "20, %s::timestamptz - (%s - g) * interval '1 second', g < %s - 20, FALSE, FALSE, '{}'::jsonb "
                    "FROM generate_series(0, %s - 1) AS g",
                    [context.pk, pool, POOL_SIZE, now, size, size, size],
                )
                cursor.execute(
                    f"INSERT INTO {entries} (kind, owner_id, project_id, message_id, text, tokens, text_hash, "  # noqa: S608
                    "created_at) SELECT 'messages', %s, %s, m.id, m.content, (%s::text[])[1 + m.position %% %s], "
                    f"(%s::text[])[1 + m.position %% %s], m.created_at FROM {messages} AS m WHERE m.context_id = %s",
                    [owner_id, project_id, tokens, POOL_SIZE, hashes, POOL_SIZE, context.pk],
                )
            else:
                created = connection.ops.adapt_datetimefield_value(now)
                cursor.executemany(
                    f"INSERT INTO {messages} (context_id, position, role, content, token_count, created_at, "  # noqa: S608
                    "archived, is_summary, unanswered, metadata) VALUES (%s, %s, %s, %s, 20, %s, %s, 0, 0, '{}')",
                    [
                        (
                            context.pk.hex,
                            g,
                            "user" if g % 2 == 0 else "assistant",
                            pool[g % POOL_SIZE],
                            created,
                            g < size - 20,
                        )
                        for g in range(size)
                    ],
                )
                cursor.execute(
                    f"SELECT id, position FROM {messages} WHERE context_id = %s",  # noqa: S608
                    [context.pk.hex],
                )
                cursor.executemany(
                    f"INSERT INTO {entries} (kind, owner_id, project_id, message_id, text, tokens, text_hash, "  # noqa: S608
                    "created_at) VALUES ('messages', %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            owner_id,
                            project_id,
                            row_id,
                            pool[position % POOL_SIZE],
                            tokens[position % POOL_SIZE],
                            hashes[position % POOL_SIZE],
                            created,
                        )
                        for row_id, position in cursor.fetchall()
                    ],
                )
        if (index + 1) % 10 == 0:
            log(f"search: {min(count, (index + 1) * MESSAGES_PER_CONTEXT):,} messages written")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {entries}" if connection.vendor == "postgresql" else "ANALYZE")


def run(*, sizes: Sizes, log: Callable[[str], None]) -> list[Result]:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from memory_app.models import Project
    from memory_app.selectors.search import memory_search
    from memory_app.services.conversation import NewMessage, context_append, context_create

    count = int(os.environ.get("BENCH_SEARCH_MESSAGES") or sizes.search_messages)
    user_model = get_user_model()
    user_model.objects.filter(username__in=["bench-search", "bench-search-append"]).delete()
    user = user_model.objects.create(username="bench-search", password="!")
    project = Project.objects.create(id="bench-search", public_id="bench-search", owner=user, name="Search benchmark")
    log(f"search: writing {count:,} messages and their index rows")
    _fill(owner_id=user.pk, project_id=project.pk, count=count, log=log)

    chooser = random.Random(11)
    words, weights = _vocabulary()
    queries = [" ".join(chooser.choices(words, weights, k=chooser.randint(1, 3))) for _ in range(sizes.search_queries)]
    memory_search(queries[0], user=user, limit=10)  # warm: jieba's dictionary, the statement's plan
    position = iter(range(len(queries) * 2))

    def search() -> None:
        memory_search(queries[next(position) % len(queries)], user=user, limit=10)

    samples = timed(search, len(queries))
    p50, p99 = median(samples) * 1000, percentile(samples, 0.99) * 1000

    log("search: append with and without indexing")
    # A user of its own: the searched one has as many contexts as the limit allows.
    writer = user_model.objects.create(username="bench-search-append", password="!")
    context = context_create(owner=writer)
    texts = _pool()
    indexed_settings = settings.MEMORY
    unindexed_settings = settings.MEMORY.model_copy(
        update={"search": settings.MEMORY.search.model_copy(update={"index_messages": False})}
    )
    turn = iter(range(sizes.search_appends * 2 + 2))

    def append(memory: object) -> Callable[[], None]:
        def call() -> None:
            settings.MEMORY = memory
            try:
                context_append(context=context, messages=[NewMessage("user", texts[next(turn) % len(texts)])])
            finally:
                settings.MEMORY = indexed_settings

        return call

    append(indexed_settings)()  # warm both paths
    append(unindexed_settings)()
    with_index, without_index = timed_pair(append(indexed_settings), append(unindexed_settings), sizes.search_appends)
    indexed_ms, bare_ms = median(with_index) * 1000, median(without_index) * 1000
    return [
        result(
            target="7",
            name=f"lexical search, {count:,} messages, p50",
            measured=p50,
            baseline=50.0,
            unit="ms",
            baseline_name="the target's p50 bound",
            limit=1.0,
            comparison="<=",
            queries=len(queries),
        ),
        result(
            target="7",
            name=f"lexical search, {count:,} messages, p99",
            measured=p99,
            baseline=250.0,
            unit="ms",
            baseline_name="the target's p99 bound",
            limit=1.0,
            comparison="<=",
        ),
        result(
            target="7",
            name="append with indexing vs without",
            measured=indexed_ms,
            baseline=bare_ms,
            unit="ms",
            baseline_name="append with index_messages off",
            limit=1.3,
            comparison="<=",
            appends=sizes.search_appends,
        ),
    ]
