"""docs/idds.md lists every public name of iDDS's iWorkflow with what became of it, and stays true:
names marked same/different exist, iDDS's keywords are accepted, and every test it cites exists."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import iworkflow.utils
import iworkflow.work
import iworkflow.workflow
from iworkflow.asyncresult import AsyncResult, MapResult
from iworkflow.work import Work
from iworkflow.workflow import Workflow

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "idds.md").read_text()

#: the public names of HSF/iDDS workflow/lib/idds/iworkflow/{workflow,work,asyncresult,utils}.py, as read there
IDDS_NAMES = {
    "idds.iworkflow.workflow": ["workflow", "Workflow", "WorkflowCanvas", "WorkflowContext", "workflow_old"],
    "Workflow": [
        "_context", "internal_id", "name", "request_id", "set_request_id", "service", "vo", "site", "queue", "cloud",
        "working_group", "priority", "core_count", "total_memory", "max_walltime", "max_attempt", "username",
        "userdn", "workflow_type", "lifetime", "workload_id", "token", "enable_separate_log", "container_options",
        "get_site", "get_workload_id", "get_work_tag", "get_work_type", "get_work_name", "get_func_name",
        "multi_jobs_kwargs_list", "prepared", "to_dict", "get_source_dir", "store", "load", "prepare",
        "submit_to_idds_server", "submit_to_panda_server", "submit", "close_to_idds_server",
        "close_to_panda_server", "close", "setup", "get_clean_env", "setup_source_files", "load_func", "pre_run",
        "run", "run_local", "__enter__", "__exit__", "get_run_command", "get_runner", "logger",
    ],
    "idds.iworkflow.work": ["work", "Work", "WorkContext", "run_work_distributed"],
    "Work": [
        "_context", "internal_id", "service", "name", "request_id", "transform_id", "processing_id", "vo", "queue",
        "site", "get_site", "cloud", "working_group", "priority", "core_count", "total_memory", "max_walltime",
        "max_attempt", "username", "userdn", "workflow_type", "map_results", "lifetime", "workload_id",
        "get_workload_id", "parent_workload_id", "get_parent_workload_id", "no_wait_parent", "enable_separate_log",
        "container_options", "other_attributes", "token", "multi_jobs_kwargs_list", "get_work_tag", "get_work_type",
        "get_work_name", "add_other_attributes", "get_parent_transform_id", "set_other_attribute",
        "get_other_attribute", "job_key", "parent_internal_id", "get_parent_internal_id", "input_datasets",
        "output_file_name", "output_dataset_name", "log_dataset_name", "num_events", "num_events_per_job",
        "parent_transform_id", "to_dict", "store", "load", "submit_to_idds_server", "submit_to_panda_server",
        "submit", "get_status_from_panda_server", "get_status_from_idds_server", "get_status",
        "cancel_from_panda_server", "cancel_from_idds_server", "cancel", "get_finished_status",
        "get_subfinished_status", "get_failed_status", "get_terminated_status", "is_terminated", "is_finished",
        "is_subfinished", "is_failed", "get_func_name", "get_multi_jobs_kwargs_list", "init_async_result",
        "stop_async_result", "wait_results", "get_results", "setup", "get_clean_env", "load_func", "pre_run", "run",
        "run_local", "get_run_command", "get_run_args_to_file_cmd", "get_run_command_test", "get_runner",
        "inputs", "input_map", "inputs_group", "init_env", "num_checks", "logger",
    ],
    "MapResult": ["add_result", "has_result", "get_result", "set_result", "get_all_results", "get_dict_results",
                  "set_from_dict_results", "__str__"],
    "AsyncResult": [
        "wait_keys", "is_all_results_available", "is_stop", "is_finished", "is_subfinished", "is_failed",
        "is_terminated", "results", "waiting_result_terminated", "disconnect", "disconnect_subscribe",
        "has_connections", "get_connections", "connect_to_messaging_broker", "subscribe_to_messaging_brokers",
        "get_message", "publish_message", "get_request_id_internal_id", "publish_through_panda_server",
        "publish_through_idds_server", "publish_through_api", "publish", "poll_messages_through_panda_server",
        "poll_messages_through_idds_server", "poll_messages", "run_subscriber", "get_results",
        "get_results_percentage", "subscribe", "stop", "wait_results", "wait_result", "is_ok", "MessagingListener",
        "logger",
    ],
    "Helpers": ["perform_workflow", "show_relation_map", "get_unique_id_for_dict", "setup_logging", "json_dumps",
                "json_loads"],
}
IDDS_PARAMETERS = {
    "workflow": ["func", "local", "service", "source_dir", "primary", "queue", "site", "cloud", "max_walltime",
                 "distributed", "init_env", "pre_kwargs", "return_workflow", "no_wraps", "source_dir_parent_level",
                 "exclude_source_files", "enable_separate_log", "clean_env", "core_count", "total_memory",
                 "container_options"],
    "Workflow": ["func", "service", "context", "source_dir", "local", "distributed", "pre_kwargs", "args", "kwargs",
                 "multi_jobs_kwargs_list", "current_job_kwargs", "name", "init_env", "is_unique_func_name",
                 "max_walltime", "source_dir_parent_level", "enable_separate_log", "exclude_source_files",
                 "clean_env", "container_options"],
    "work": ["func", "workflow", "pre_kwargs", "name", "return_work", "map_results", "lazy", "init_env", "no_wraps",
             "container_options", "parent_workload_id", "no_wait_parent", "input_datasets", "output_file_name",
             "enable_separate_log", "output_dataset_name", "log_dataset_name", "num_events", "num_events_per_job",
             "parent_transform_id", "parent_internal_id", "job_key"],
    "Work": ["func", "workflow_context", "context", "pre_kwargs", "args", "kwargs", "multi_jobs_kwargs_list",
             "current_job_kwargs", "map_results", "source_dir", "init_env", "is_unique_func_name", "name",
             "parent_workload_id", "no_wait_parent", "container_options", "input_datasets", "output_file_name",
             "output_dataset_name", "num_events", "num_events_per_job", "parent_transform_id", "parent_internal_id",
             "log_dataset_name", "inputs", "input_map", "inputs_group", "enable_separate_log", "job_key",
             "json_load"],
    "AsyncResult": ["work_context", "name", "wait_num", "wait_keys", "multi_jobs_kwargs_list", "current_job_kwargs",
                    "map_results", "wait_percent", "internal_id", "timeout"],
    "MapResult.get_result": ["name", "args", "key", "verbose"],
    "MapResult.set_result": ["name", "args", "key", "value", "verbose"],
    "MapResult.add_result": ["name", "args", "key", "result"],
    "AsyncResult.publish": ["ret", "key", "force", "ret_status", "ret_error"],
    "AsyncResult.wait_results": ["timeout", "force_return_results"],
    "AsyncResult.get_results": ["nologs"],
    "Work.is_finished": ["status"],
    "Work.is_failed": ["status"],
    "Work.is_subfinished": ["status"],
    "Work.is_terminated": ["status"],
}
SECTION_HEADINGS = {"idds.iworkflow.workflow": "`idds.iworkflow.workflow`", "Workflow": "`Workflow`",
                    "idds.iworkflow.work": "`idds.iworkflow.work`", "Work": "`Work`", "MapResult": "`MapResult`",
                    "AsyncResult": "`AsyncResult`", "Helpers": "Helpers"}


def _rows(section: str) -> dict[str, str]:
    """{documented name: same|different|not provided} from the table under '### <heading>'."""
    body = DOC.split(f"### {SECTION_HEADINGS[section]}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`(]+)(?:\([^`]*\))?`", cells[0]):
            rows[name] = cells[1]
    return rows


def _ours(section: str, embedded):
    wf = Workflow(func=print)
    return {"idds.iworkflow.workflow": iworkflow.workflow, "Workflow": wf, "idds.iworkflow.work": iworkflow.work,
            "Work": Work(print, workflow=wf), "MapResult": MapResult(), "AsyncResult": AsyncResult(wf),
            "Helpers": iworkflow.utils}[section]


@pytest.mark.parametrize("section", sorted(IDDS_NAMES))
def test_every_public_idds_name_has_a_row_and_the_ones_kept_exist(section, embedded):
    rows = _rows(section)
    missing = [n for n in IDDS_NAMES[section] if n not in rows]
    assert not missing, f"docs/idds.md, section {section}: no row for {missing}"
    assert set(rows.values()) <= {"same", "different", "not provided", "added"}
    ours = _ours(section, embedded)
    absent = [n for n, verdict in rows.items()
              if verdict != "not provided" and n != section and not hasattr(ours, n)]
    assert not absent, f"docs/idds.md says these exist on {section} but they do not: {absent}"


@pytest.mark.parametrize("target", sorted(IDDS_PARAMETERS))
def test_decorators_and_constructors_take_every_idds_parameter(target):
    owner, _, method = target.partition(".")
    obj = {"workflow": iworkflow.workflow.workflow, "Workflow": Workflow, "work": iworkflow.work.work, "Work": Work,
           "AsyncResult": AsyncResult, "MapResult": MapResult}[owner]
    params = inspect.signature(getattr(obj, method) if method else obj).parameters
    assert not [p for p in IDDS_PARAMETERS[target] if p not in params]


def test_every_test_the_page_cites_exists():
    cited = set(re.findall(r"`(?:tests/)?([\w/]*test_\w+\.py)(?:::(\w+))?`", DOC))
    assert cited
    for path, name in cited:
        file = REPO / "tests" / path if "/" in path else REPO / "tests" / "idds" / path
        if not file.exists():
            file = REPO / "tests" / path
        assert file.exists(), f"docs/idds.md cites {path}, which does not exist"
        if name:
            assert f"def {name}(" in file.read_text(), f"docs/idds.md cites {path}::{name}, which does not exist"


def test_each_fixed_defect_cites_a_test_that_exists():
    defects = DOC.split("## The nine defects", 1)[1]
    cited = re.findall(r"`(test_defect\d_\w+)`", defects)
    source = (REPO / "tests" / "test_idds_defects.py").read_text()
    assert [int(name[len("test_defect")]) for name in cited] == list(range(1, 10))
    assert all(f"def {name}(" in source for name in cited)


def test_no_page_or_test_points_at_an_api_md_that_is_not_in_the_repository():
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "tests").rglob("*.py")]:
        if path.name != "test_docs_table.py":
            assert "API.md" not in path.read_text(), path
