"""Tests of keyrelay.files (a package, so module names like test_failures may repeat elsewhere)."""
