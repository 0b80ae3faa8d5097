import pytest

from grader.course.roster import RosterEntry, read_roster
from grader.model.errors import GraderError


def test_a_roster_maps_ids_to_lms_names_in_file_order(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text("\ufeffStudent,Name,Email,LMS_ID\nzoe,Zoé Ångström,zoe@uni.example,12345\nal,Al B,,7\n",
                    encoding="utf-8")
    assert read_roster(path) == [RosterEntry("zoe", "Zoé Ångström", "zoe@uni.example", "12345"),
                                 RosterEntry("al", "Al B", "", "7")]


@pytest.mark.parametrize(("text", "words"), [
    ("name,email\nZoe,z@x\n", "no 'student' column"),
    ("student,name\n,Zoe\n", "line 2: the student id is empty"),
    ("student\nzoe\nzoe\n", "line 3: student 'zoe' is already on line 2"),
])
def test_a_roster_that_cannot_be_used_is_one_line(tmp_path, text, words):
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(GraderError, match=words):
        read_roster(path)


def test_a_missing_roster_says_what_to_pass(tmp_path):
    with pytest.raises(GraderError, match="does not exist"):
        read_roster(tmp_path / "nope.csv")
