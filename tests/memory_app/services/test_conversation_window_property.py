"""The window rule, checked against a plain reference over random appends, batches, clears and budgets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_app.errors import ContextBudgetExceeded, ContextMessageTooLarge
from memory_app.models import ContextMessage
from memory_app.services.conversation import NewMessage, context_append, context_clear, context_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@dataclass
class Reference:
    """The rule as written: every system message + the longest run of most recent others within both budgets."""

    max_messages: int
    max_tokens: int
    systems: list[tuple[int, int]] = field(default_factory=list)  # (position, tokens)
    others: list[tuple[int, int]] = field(default_factory=list)  # every other message since the last clear
    next_position: int = 0

    def refusal(self, role: str, tokens: int) -> type[Exception] | None:
        system_tokens = sum(t for _, t in self.systems)
        if role == "system":
            if tokens > self.max_tokens:
                return ContextMessageTooLarge
            if len(self.systems) + 1 > self.max_messages or system_tokens + tokens > self.max_tokens:
                return ContextBudgetExceeded
            return None
        if len(self.systems) + 1 > self.max_messages or system_tokens + tokens > self.max_tokens:
            return ContextMessageTooLarge
        return None

    def append(self, role: str, tokens: int) -> None:
        (self.systems if role == "system" else self.others).append((self.next_position, tokens))
        self.next_position += 1

    def window(self) -> list[int]:
        room_messages = self.max_messages - len(self.systems)
        room_tokens = self.max_tokens - sum(t for _, t in self.systems)
        kept: list[tuple[int, int]] = []
        for position, tokens in reversed(self.others):
            if len(kept) + 1 > room_messages or sum(t for _, t in kept) + tokens > room_tokens:
                break
            kept.append((position, tokens))
        return sorted([p for p, _ in self.systems] + [p for p, _ in kept])


message = st.tuples(st.sampled_from(["system", "user", "assistant", "user"]), st.integers(min_value=1, max_value=12))
operation = st.one_of(
    st.lists(message, min_size=1, max_size=3).map(lambda batch: ("append", batch)),
    st.just(("clear", None)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_messages=st.integers(min_value=1, max_value=6),
    max_tokens=st.integers(min_value=1, max_value=30),
    operations=st.lists(operation, min_size=1, max_size=25),
)
def test_window_matches_the_reference(db, max_messages, max_tokens, operations):
    with transaction.atomic():
        owner = UserFactory(username="prop")
        context = context_create(owner=owner, max_messages=max_messages, max_tokens=max_tokens)
        reference = Reference(max_messages, max_tokens)
        for kind, batch in operations:
            if kind == "clear":
                context, _ = context_clear(context=context)
                reference.others = []
                continue
            trial = Reference(
                max_messages, max_tokens, list(reference.systems), list(reference.others), reference.next_position
            )
            expected_refusal = None
            for role, tokens in batch:
                expected_refusal = trial.refusal(role, tokens)
                if expected_refusal:
                    break
                trial.append(role, tokens)
            messages = [NewMessage(role, " ".join(["word"] * tokens)) for role, tokens in batch]
            if expected_refusal:
                with pytest.raises(expected_refusal):
                    context_append(context=context, messages=messages)
            else:
                context, _ = context_append(context=context, messages=messages)
                reference = trial

            active = list(
                ContextMessage.objects.filter(context=context, archived=False)
                .order_by("position")
                .values_list("position", "token_count")
            )
            assert [position for position, _ in active] == reference.window()
            context.refresh_from_db()
            assert context.next_position == reference.next_position
            assert context.message_count == len(active) <= max_messages
            assert context.token_count == sum(tokens for _, tokens in active) <= max_tokens
            archived = ContextMessage.objects.filter(context=context, archived=True).values_list("position", flat=True)
            everything = {p for p, _ in reference.systems} | {p for p, _ in reference.others}
            assert set(archived) == everything - set(reference.window())
        transaction.set_rollback(True)
