"""The recall index is written with its objects, on every write path, and goes with them: messages (the append's
fast path and its ORM path, summaries, imports), history records, characters, story texts; and
``search_reindex`` rebuilds exactly what those paths wrote. Runs on SQLite, and on PostgreSQL with
TEST_DATABASE_URL (where the append's index rows are one more part of its single statement)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db import connection

from memory_app.models import (
    ContextMessage,
    HistoryArchive,
    HistoryRecord,
    SearchEntry,
    SearchKind,
    WorkflowState,
)
from memory_app.search_text import index_tokens, query_words, text_hash
from memory_app.selectors.search import memory_search
from memory_app.services.characters import character_create, character_update
from memory_app.services.conversation import NewMessage, context_append, context_clear, context_create
from memory_app.services.conversation import persistence as persistence_module
from memory_app.services.history import history_record
from memory_app.services.history.archive import history_archive_run
from memory_app.services.projects import project_delete
from memory_app.services.search import search_reindex
from memory_app.services.workflow.runs import workflow_create
from tests.factories import HistoryRecordFactory

pytestmark = pytest.mark.django_db


def _with_search(settings, **values):
    settings.MEMORY = settings.MEMORY.model_copy(update={"search": settings.MEMORY.search.model_copy(update=values)})


def _with_conversation(settings, **values):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update=values)}
    )


def index_rows() -> list[tuple]:
    """Every index row as what it says (not its own id), in a stable order."""
    return sorted(
        (row.kind, row.object_id, row.owner_id, row.project_id, row.text, row.tokens, row.text_hash, row.created_at)
        for row in SearchEntry.objects.all()
    )


def found(query: str, user, **options) -> list[tuple[str, str]]:
    return [(hit.entry.kind, hit.entry.object_id) for hit in memory_search(query, user=user, **options).hits]


@pytest.fixture(params=["fast path", "ORM path"])
def append_path(request, monkeypatch):
    if request.param == "ORM path":
        monkeypatch.setattr(persistence_module, "_insert_evict_and_save", lambda *args, **kwargs: False)
    return request.param


def test_an_append_indexes_its_messages_in_its_own_write(user, project, append_path):
    context = context_create(owner=user, project=project)

    _, rows = context_append(
        context=context,
        messages=[NewMessage("user", "林小雨撑着红伞走进雨里。"), NewMessage("assistant", "好的，红伞很醒目！")],
    )

    entries = {entry.message_id: entry for entry in SearchEntry.objects.filter(kind=SearchKind.MESSAGE)}
    assert set(entries) == {row.pk for row in rows}
    for row in rows:
        stored = ContextMessage.objects.get(pk=row.pk)
        entry = entries[row.pk]
        assert (entry.kind, entry.owner_id, entry.project_id) == (SearchKind.MESSAGE, user.pk, project.pk)
        assert (entry.text, entry.tokens, entry.text_hash) == (
            stored.content,
            index_tokens(stored.content),
            text_hash(stored.content),
        )
        assert entry.created_at == stored.created_at
    assert set(found("红伞", user)) == {("messages", str(row.pk)) for row in rows}


def test_messages_stay_out_of_the_index_when_switched_off(user, settings, append_path):
    _with_search(settings, index_messages=False)
    context = context_create(owner=user)

    context_append(context=context, messages=[NewMessage("user", "古井里传出歌声")])

    assert ContextMessage.objects.count() == 1
    assert SearchEntry.objects.count() == 0


def test_archived_messages_stay_indexed_and_are_found(user):
    context = context_create(owner=user, max_messages=2)
    for text in ["第一句：七叶莲长在悬崖边", "第二句", "第三句", "第四句"]:
        context_append(context=context, messages=[NewMessage("user", text)])

    first = ContextMessage.objects.get(context=context, position=0)
    assert first.archived is True
    assert SearchEntry.objects.filter(kind=SearchKind.MESSAGE).count() == 4
    assert found("七叶莲", user) == [("messages", str(first.pk))]
    assert found("七叶莲", user, archived_only=True) == [("messages", str(first.pk))]


def test_eviction_by_deletion_takes_the_index_rows_along(user, settings):
    _with_conversation(settings, keep_archived=False)
    context = context_create(owner=user, max_messages=2)
    for text in ["一", "二", "三"]:
        context_append(context=context, messages=[NewMessage("user", text)])

    assert ContextMessage.objects.filter(context=context).count() == 2
    assert sorted(SearchEntry.objects.values_list("message_id", flat=True)) == sorted(
        ContextMessage.objects.values_list("pk", flat=True)
    )


def test_clearing_a_context_counts_its_messages_and_drops_their_rows(user):
    context = context_create(owner=user)
    context_append(context=context, messages=[NewMessage("user", "雨夜"), NewMessage("assistant", "茶馆")])

    _, removed = context_clear(context=context)

    assert removed == 2
    assert SearchEntry.objects.filter(kind=SearchKind.MESSAGE).count() == 0


def test_a_history_record_is_indexed_with_the_readable_part_of_its_details(user, project):
    record = history_record(
        project=project,
        action="character_designed",
        user=user,
        summary="设计了沈默的造型",
        details={"name": "沈默", "character_id": 7, "prompt_hash": "ab12", "path": "/x/y.png"},
    )

    entry = SearchEntry.objects.get(history=record)
    assert (entry.owner_id, entry.project_id, entry.created_at) == (user.pk, project.pk, record.timestamp)
    assert entry.text == "设计了沈默的造型"  # the name is already in the summary; ids, hashes and paths are not text
    other = history_record(project=project, action="character_designed", summary="造型", details={"name": "团子"})
    assert SearchEntry.objects.get(history=other).text == "造型\n团子"


def test_a_system_wide_record_has_no_row(db):
    record = history_record(project=None, action="cache_cleared", summary="cache cleared")

    assert not SearchEntry.objects.filter(history=record).exists()


def test_archiving_history_removes_the_rows_and_counts_only_records(user, project, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    # An old record (the factory writes the row alone; the rebuild gives it its index row).
    aged = HistoryRecordFactory(project=project, timestamp=dt.datetime(2024, 1, 5, tzinfo=dt.UTC), summary="旧梗概")
    search_reindex(kinds=["history"])
    assert SearchEntry.objects.filter(history=aged).exists()

    history_archive_run(now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))

    archive = HistoryArchive.objects.get(scope=project.pk)
    assert archive.record_count == 1
    assert not HistoryRecord.objects.filter(pk=aged.pk).exists()
    assert not SearchEntry.objects.filter(history_id=aged.pk).exists()
    summary = HistoryRecord.objects.get(action="history_archived")
    assert summary.details["archived"] == 1


def test_a_character_is_indexed_on_create_and_again_on_every_update(user, project):
    character = character_create(
        user=user, project=project, name="林小雨", aliases=["小雨"], appearance_features={"accessory": "红色油纸伞"}
    )
    assert SearchEntry.objects.get(character=character).text == "林小雨\n小雨\n红色油纸伞"

    character_update(user=user, character=character, fields={"personality_traits": ["倔强"]})

    assert SearchEntry.objects.filter(character=character).count() == 1
    assert SearchEntry.objects.get(character=character).text == "林小雨\n小雨\n红色油纸伞\n倔强"
    assert ("characters", str(character.pk)) in found("倔强", user)


def test_a_run_indexes_its_story_and_a_run_without_one_has_no_row(user, project):
    run = workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["text_segmentation"],
        data={"text": "元宵灯会上，阿强扎了一条龙灯。"},
        preferences={},
    )
    bare = workflow_create(
        workflow_type="comic_generation", project=project, owner=user, steps=["x"], data={}, preferences={}
    )

    assert SearchEntry.objects.get(workflow=run).text == "元宵灯会上，阿强扎了一条龙灯。"
    assert not SearchEntry.objects.filter(workflow=bare).exists()
    assert found("龙灯", user, kinds=["stories"]) == [("stories", str(run.pk))]


def test_deleting_a_project_or_a_user_takes_every_row_along(user, project):
    context = context_create(owner=user, project=project)
    context_append(context=context, messages=[NewMessage("user", "古井")])
    character_create(user=user, project=project, name="孟婆婆")
    workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["x"],
        data={"text": "古井"},
        preferences={},
    )
    assert set(SearchEntry.objects.values_list("kind", flat=True)) == set(SearchKind.values)

    project_delete(project=project)

    assert SearchEntry.objects.exclude(kind=SearchKind.MESSAGE).count() == 0
    user.delete()
    assert SearchEntry.objects.count() == 0
    assert WorkflowState.objects.count() == 0


def test_a_single_character_and_a_name_cut_apart_still_find_the_text(user):
    context = context_create(owner=user)
    _, (row,) = context_append(context=context, messages=[NewMessage("user", "林小雨撑着伞，雨越下越大。")])

    assert found("雨", user) == [("messages", str(row.pk))]
    assert found("林小雨", user) == [("messages", str(row.pk))]
    assert found("小雨", user) == [("messages", str(row.pk))]


def test_a_query_of_punctuation_alone_finds_nothing(user):
    context = context_create(owner=user)
    context_append(context=context, messages=[NewMessage("user", "！？……")])

    assert query_words("！？……") == []
    assert found("！？……", user) == []


def test_only_the_owner_finds_their_rows_and_staff_find_all(user, other_user, staff_user):
    mine = context_create(owner=user)
    theirs = context_create(owner=other_user)
    context_append(context=mine, messages=[NewMessage("user", "蛇纹铜牌")])
    context_append(context=theirs, messages=[NewMessage("user", "蛇纹铜牌")])

    assert len(found("蛇纹", user)) == 1
    assert len(found("蛇纹", other_user)) == 1
    assert len(found("蛇纹", staff_user)) == 2


def test_reindex_rebuilds_exactly_what_the_write_paths_wrote(user, project):
    context = context_create(owner=user, project=project, max_messages=2)
    for text in ["雨夜来客", "红伞", "七叶莲", "蛇纹铜牌"]:
        context_append(context=context, messages=[NewMessage("user", text)])
    character = character_create(user=user, project=project, name="沈默", aliases=["阿默"])
    character_update(user=user, character=character, fields={"personality_traits": ["寡言"]})
    history_record(project=project, action="plot_summarized", summary="第一章梗概", details={"title": "雨夜"})
    workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["x"],
        data={"text": "古井"},
        preferences={},
    )
    written = index_rows()
    assert {row[0] for row in written} == set(SearchKind.values)

    SearchEntry.objects.all().delete()
    call_command("search_reindex", "--batch-size", "2")
    assert index_rows() == written

    # Idempotent: a second run, and a run of one kind for one project, change nothing.
    call_command("search_reindex", "--kind", "characters", "--project", project.public_id)
    search_reindex()
    assert index_rows() == written


def test_reindex_drops_message_rows_when_messages_are_not_indexed(user, settings):
    context = context_create(owner=user)
    context_append(context=context, messages=[NewMessage("user", "雨")])
    _with_search(settings, index_messages=False)

    assert search_reindex(kinds=["messages"]) == {"messages": 0}
    assert SearchEntry.objects.count() == 0


def test_the_postgres_append_is_still_one_statement(user, django_assert_max_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("the single-statement append is PostgreSQL's")
    context = context_create(owner=user)
    context_append(context=context, messages=[NewMessage("user", "热身")])
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        context_append(context=context, messages=[NewMessage("user", "古井歌声")])

    inserts = [query["sql"] for query in queries.captured_queries if "memory_app_searchentry" in query["sql"]]
    assert len(inserts) == 1 and inserts[0].startswith("WITH archived AS")
    assert SearchEntry.objects.count() == 2


def test_a_frequent_word_is_ranked_among_its_newest_matches(user, other_user, monkeypatch):
    from memory_app.selectors import search as search_selectors

    monkeypatch.setattr(search_selectors, "RANK_WINDOW", 2)
    context = context_create(owner=user)
    rows = []
    for text in ["古井 古井 古井", "古井", "古井"]:
        _, (row,) = context_append(context=context, messages=[NewMessage("user", text)])
        rows.append(row)
    # Someone else's newer matches do not use up the caller's window.
    context_append(context=context_create(owner=other_user), messages=[NewMessage("user", "古井")])

    assert {object_id for _, object_id in found("古井", user)} == {str(rows[1].pk), str(rows[2].pk)}
