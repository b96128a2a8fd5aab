"""Project actions on input: current names, the 2023 and Jan 2024 spellings, and bad values."""

from __future__ import annotations

import pytest

from cairn.project.grpc_api import parse_actions
from cairn.project.model import (
    ALL_ACTIONS,
    ProjectAction,
    ProjectPolicy,
    in_enum_order,
    parse_action,
)
from cairn.runtime.errors import Problems


@pytest.mark.parametrize("raw, action", [
    ("ViewComponent", ProjectAction.VIEW_COMPONENT),
    ("DeleteApiDefinition", ProjectAction.DELETE_API_DEFINITION),
    ("ViewInstance", ProjectAction.VIEW_WORKER),
    ("DeleteInstance", ProjectAction.DELETE_WORKER),
    ("CreateTemplate", ProjectAction.CREATE_COMPONENT),
    ("UpdateTemplate", ProjectAction.UPDATE_COMPONENT),
])
def test_names_and_older_spellings(raw: str, action: ProjectAction) -> None:
    assert parse_action(raw) is action


# Golem's 2025 names are not Dec 2024 project actions.
TWENTY_25 = ["DeleteProject", "ViewPluginInstallations", "CreatePluginInstallation",
             "UpdatePluginInstallation", "DeletePluginInstallation", "ViewProject"]


def test_the_dec_2024_enum_has_its_fifteen_values_in_order() -> None:
    assert [a.value for a in ALL_ACTIONS] == [
        "ViewComponent", "CreateComponent", "UpdateComponent", "DeleteComponent",
        "ViewWorker", "CreateWorker", "UpdateWorker", "DeleteWorker",
        "ViewProjectGrants", "CreateProjectGrants", "DeleteProjectGrants",
        "ViewApiDefinition", "CreateApiDefinition", "UpdateApiDefinition", "DeleteApiDefinition",
    ]


def test_a_stored_policy_naming_2025_actions_keeps_only_dec_2024_ones() -> None:
    stored = {"id": "p", "name": "old", "owner": "a",
              "actions": ["ViewComponent", "DeleteProject", "CreatePluginInstallation"]}
    assert ProjectPolicy.from_record(stored).actions == (ProjectAction.VIEW_COMPONENT,)


@pytest.mark.parametrize("raw", ["viewComponent", "VIEW_COMPONENT", "", 3, None, *TWENTY_25])
def test_anything_else_is_refused_with_the_value(raw: object) -> None:
    with pytest.raises(ValueError) as err:
        parse_action(raw)
    assert str(err.value) == f"Invalid project action: {raw!r}"


def test_both_json_shapes_and_problems_collected() -> None:
    problems = Problems()

    def found() -> list[tuple[str, str]]:
        return [(v.field, v.description) for v in problems.violations]

    assert parse_actions({"actions": ["ViewWorker"]}, problems) == [ProjectAction.VIEW_WORKER]
    assert parse_actions(["ViewWorker", "ViewComponent"], problems) == [
        ProjectAction.VIEW_WORKER, ProjectAction.VIEW_COMPONENT]
    assert parse_actions(None, problems) is None
    assert not problems
    assert parse_actions(["Fly", "ViewWorker", 7], problems) == [ProjectAction.VIEW_WORKER]
    assert found() == [("projectActions", "Invalid project action: 'Fly'"),
                       ("projectActions", "Invalid project action: 7")]
    problems = Problems()
    assert parse_actions({"actions": [], "more": 1}, problems) is None
    assert found() == [
        ("projectActions", 'Invalid field projectActions: expected {"actions": [...]} or a list')]


def test_enum_order_is_stable_and_distinct() -> None:
    shuffled = [ProjectAction.VIEW_WORKER, ProjectAction.VIEW_COMPONENT,
                ProjectAction.VIEW_WORKER]
    assert in_enum_order(shuffled) == (ProjectAction.VIEW_COMPONENT, ProjectAction.VIEW_WORKER)
    assert in_enum_order(reversed(ALL_ACTIONS)) == ALL_ACTIONS
