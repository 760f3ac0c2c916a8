import json
import os
import stat

from personalens._io import append_jsonl, atomic_write_json, read_jsonl


def test_atomic_write_has_normal_permissions_and_no_temp_files(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "x.json", {"k": 1})
    assert json.loads(path.read_text()) == {"k": 1}
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o044  # readable by group/others under the usual umask, not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "a") as fh:
        fh.write('{"a": 3, "b"')  # a crash mid-append
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]
