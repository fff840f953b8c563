"""The subnet's task names, as one enum both processes use.

``Task`` is a ``StrEnum``: a member *is* its string, so ``Task.INFERENCE ==
"InferenceTask"`` holds, members go into JSON as plain strings, and code that
still compares with string literals keeps working::

    from shared.tasks import Task
    if item.task == Task.WEB_RETRIEVAL: ...
    Task("WebQuestionAnsweringTask") is Task.WEB_QUESTION_ANSWERING
"""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    INFERENCE = "InferenceTask"
    WEB_QUESTION_ANSWERING = "WebQuestionAnsweringTask"
    PROGRAMMING = "ProgrammingTask"
    WEB_RETRIEVAL = "WebRetrievalTask"
    MULTI_STEP_REASONING = "MultiStepReasoningTask"


TASKS = tuple(task.value for task in Task)
