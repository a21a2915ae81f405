"""Reads on every request written as one plain SELECT of a model's columns, without the ORM's query building.

Building and compiling a queryset costs about 0.4 ms, more than a one-row query on a warm connection; the token
lookup and the project check run on every API request. The columns, their quoting and the converters the ORM
would apply to their values (SQLite's datetimes and UUIDs, a JSON document's text) come from the model's own
metadata, found once per database; the instances are made by ``Model.from_db``, as the ORM makes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Expression, Field, Model

ModelT = TypeVar("ModelT", bound=Model)
Converter = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class ModelColumns:
    """The concrete columns of a model on one database: ``table.column`` list for a SELECT, the attribute names
    ``from_db`` takes in the same order, and the converters of the columns that need any."""

    alias: str
    select: str
    attnames: list[str]
    converters: list[tuple[int, Expression, list[Converter]]]

    def instance(self, model: type[ModelT], values: Sequence[Any]) -> ModelT:
        """The model instance of one row's values (this model's slice of them), converted as the ORM does."""
        return model.from_db(self.alias, self.attnames, converted(values, self.converters, self.alias))


def column_converters(alias: str, expressions: Sequence[Any]) -> list[tuple[int, Expression, list[Converter]]]:
    """What the ORM's compiler applies to each selected column's value, for the columns that need it."""
    connection = connections[alias]
    found = []
    for index, expression in enumerate(expressions):
        functions = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        if functions:
            found.append((index, expression, functions))
    return found


def converted(
    values: Sequence[Any], converters: list[tuple[int, Expression, list[Converter]]], alias: str
) -> list[Any]:
    result = list(values)
    if converters:
        connection = connections[alias]
        for index, expression, functions in converters:
            for function in functions:
                result[index] = function(result[index], expression, connection)
    return result


@functools.cache
def model_columns(alias: str, model: type[Model]) -> ModelColumns:
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = model._meta.db_table
    fields: list[Field[Any, Any]] = list(model._meta.concrete_fields)
    return ModelColumns(
        alias=alias,
        select=", ".join(f"{quote(table)}.{quote(field.column)}" for field in fields if field.column),
        attnames=[field.attname for field in fields],
        converters=column_converters(alias, [field.get_col(table) for field in fields]),
    )


@functools.cache
def column(alias: str, model: type[Model], name: str) -> str:
    """``"table"."column"`` of one of the model's fields (a foreign key's own column for a relation)."""
    quote = connections[alias].ops.quote_name
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column is not None, f"{model.__name__}.{name} is not a column"
    return f"{quote(model._meta.db_table)}.{quote(field.column)}"
