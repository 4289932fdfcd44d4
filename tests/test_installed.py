"""
The end-to-end tests run the installed C{twistd} and console script, not this tree: check that the
installed copy is this tree, so they never pass against stale code.  (C{make test} reinstalls
whenever a source changes; running pytest by hand after an edit needs C{pip install .} first.)
"""

import filecmp
import os
import sysconfig

from twisted.trial.unittest import SynchronousTestCase

from tests.support import PROJECT_ROOT


class InstalledCopyTests(SynchronousTestCase):
    """Every module of the package and the twistd dropin are installed as they are in the tree."""

    def test_installed_files_match_the_tree(self):
        site = sysconfig.get_paths()["purelib"]
        pairs = [
            (os.path.join(PROJECT_ROOT, "twisted", "plugins", "chatroom.py"),
             os.path.join(site, "twisted", "plugins", "chatroom.py")),
        ]
        package = os.path.join(PROJECT_ROOT, "chatservice")
        for folder, _, names in os.walk(package):
            for name in sorted(names):
                if name.endswith((".py", ".html", ".css", ".js")):  # the web page's files too
                    mine = os.path.join(folder, name)
                    relative = os.path.relpath(mine, package)
                    pairs.append((mine, os.path.join(site, "chatservice", relative)))
        stale = [
            os.path.relpath(mine, PROJECT_ROOT)
            for mine, installed in pairs
            if not os.path.exists(installed) or not filecmp.cmp(mine, installed, shallow=False)
        ]
        self.assertEqual(
            stale, [], "the installed copy differs from the tree: run `pip install .` (or make test)"
        )
