"""Local lm-evaluation-harness tasks: task YAMLs written next to their data, for offline runs.

lm-eval reads a task's data through ``datasets``, from the hub by default. These tasks read
JSON lines files instead, so they run where no hub is reachable: ``cald_cloze`` ships with the
package (48 everyday-knowledge sentence completions, four choices each, scored by the
log-likelihood of each completion), and ``cald_text`` is built from any text file the user
names (rolling log-likelihood over its paragraphs: word and byte perplexity, bits per byte).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

CLOZE_TASK = "cald_cloze"
TEXT_TASK = "cald_text"
LOCAL_TASKS = (CLOZE_TASK, TEXT_TASK)
CLOZE_DATA = Path(__file__).with_name("cloze.jsonl")

_CLOZE_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_TEXT_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
should_decontaminate: false
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def paragraphs(text: str) -> list[str]:
    """The non-empty blank-line-separated paragraphs of ``text``, each on one line."""
    blocks = [" ".join(block.split()) for block in text.split("\n\n")]
    return [block for block in blocks if block]


def write_local_tasks(folder: Path, text_file: Path | None = None) -> list[str]:
    """Write the local tasks' YAML (and ``cald_text``'s data) into ``folder``; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{CLOZE_TASK}.yaml").write_text(
        _CLOZE_YAML.format(task=CLOZE_TASK, data=json.dumps(str(CLOZE_DATA)))
    )
    if text_file is None:
        return [CLOZE_TASK]
    try:
        blocks = paragraphs(text_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"--text {text_file}: cannot read it as UTF-8 text: {error}") from None
    if not blocks:
        raise DataError(f"--text {text_file}: no text in it")
    data = folder / f"{TEXT_TASK}.jsonl"
    data.write_text("".join(json.dumps({"text": block}) + "\n" for block in blocks))
    (folder / f"{TEXT_TASK}.yaml").write_text(
        _TEXT_YAML.format(task=TEXT_TASK, data=json.dumps(str(data)))
    )
    return [CLOZE_TASK, TEXT_TASK]
