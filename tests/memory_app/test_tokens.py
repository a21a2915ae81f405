from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from memory_app.models import ContextMessage
from memory_app.services.conversation import NewMessage, context_append, context_create
from memory_app.tokens import count_tokens, estimate_tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("word", 1),
        ("hello world", 3),  # 10 letters → ceil(10 / 4)
        ("你好世界", 4),  # one per Han character
        ("漫画 comic", 4),  # 2 CJK + ceil(5 / 4)
        ("こんにちは", 5),  # kana
        ("안녕", 2),  # Hangul
        ("   \n\t ", 1),  # whitespace only: still one token
    ],
)
def test_estimate_is_cjk_aware(text, expected):
    assert estimate_tokens(text) == expected


@pytest.fixture
def tokenizer_file(tmp_path):
    """A tiny word-level tokenizer.json built here with the tokenizers library itself."""
    vocabulary = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return str(path)


@pytest.mark.django_db
def test_a_configured_tokenizer_file_counts_exactly_and_is_stored(settings, tokenizer_file, user):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"tokenizer_file": tokenizer_file})}
    )
    # Word level: "the cat sat on the mat ." is 7 tokens ("on", "mat", "." are unknown words); the estimate says 5.
    assert count_tokens("the cat sat on the mat .") == 7
    assert estimate_tokens("the cat sat on the mat .") == 5

    context = context_create(owner=user)
    _, (message,) = context_append(
        context=context, messages=NewMessage(role="user", content="the cat sat on the mat .")
    )

    assert ContextMessage.objects.get(pk=message.pk).token_count == 7
    context.refresh_from_db()
    assert context.token_count == 7
