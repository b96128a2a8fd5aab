"""Project actions on input: current names, the 2023 and Jan 2024 spellings, and bad values."""

from __future__ import annotations

import pytest

from cairn.project.grpc_api import parse_actions
from cairn.project.model import ALL_ACTIONS, ProjectAction, in_enum_order, parse_action


@pytest.mark.parametrize("raw, action", [
    ("ViewComponent", ProjectAction.VIEW_COMPONENT),
    ("DeletePluginInstallation", ProjectAction.DELETE_PLUGIN_INSTALLATION),
    ("ViewInstance", ProjectAction.VIEW_WORKER),
    ("DeleteInstance", ProjectAction.DELETE_WORKER),
    ("CreateTemplate", ProjectAction.CREATE_COMPONENT),
    ("UpdateTemplate", ProjectAction.UPDATE_COMPONENT),
])
def test_names_and_older_spellings(raw: str, action: ProjectAction) -> None:
    assert parse_action(raw) is action


@pytest.mark.parametrize("raw", ["viewComponent", "VIEW_COMPONENT", "", 3, None])
def test_anything_else_is_refused_with_the_value(raw: object) -> None:
    with pytest.raises(ValueError) as err:
        parse_action(raw)
    assert str(err.value) == f"Invalid project action: {raw!r}"


def test_both_json_shapes_and_problems_collected() -> None:
    problems: list[str] = []
    assert parse_actions({"actions": ["ViewWorker"]}, problems) == [ProjectAction.VIEW_WORKER]
    assert parse_actions(["ViewWorker", "ViewComponent"], problems) == [
        ProjectAction.VIEW_WORKER, ProjectAction.VIEW_COMPONENT]
    assert parse_actions(None, problems) is None
    assert problems == []
    assert parse_actions(["Fly", "ViewWorker", 7], problems) == [ProjectAction.VIEW_WORKER]
    assert problems == ["Invalid project action: 'Fly'", "Invalid project action: 7"]
    problems.clear()
    assert parse_actions({"actions": [], "more": 1}, problems) is None
    assert problems == ['Invalid field projectActions: expected {"actions": [...]} or a list']


def test_enum_order_is_stable_and_distinct() -> None:
    shuffled = [ProjectAction.VIEW_WORKER, ProjectAction.VIEW_COMPONENT,
                ProjectAction.VIEW_WORKER]
    assert in_enum_order(shuffled) == (ProjectAction.VIEW_COMPONENT, ProjectAction.VIEW_WORKER)
    assert in_enum_order(reversed(ALL_ACTIONS)) == ALL_ACTIONS
