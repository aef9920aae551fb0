"""Print the ONNX backend node-test figure for moec: passed, failed, excluded (with reasons).

    python tests/backend_report.py [-v]
"""
import collections
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_onnx_backend as t  # noqa: E402


def main():
    verbose = "-v" in sys.argv
    suite = unittest.TestSuite()
    for case in t.backend_test.test_cases.values():
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    res = unittest.TextTestRunner(verbosity=2 if verbose else 0, stream=open(os.devnull, "w")).run(suite)
    excluded = [(n, why) for n, why in t.CASES if why]
    failed = res.failures + res.errors
    for test, tb in failed:
        print("FAIL", test.id().split(".")[-1], "|", tb.strip().splitlines()[-1][:200])
    reasons = collections.Counter(why for _, why in excluded)
    print(f"\nONNX backend node tests in moec's scope: {len(t.CASES)}")
    print(f"  excluded: {len(excluded)}")
    for why, n in reasons.most_common():
        print(f"    {n:4d}  {why}")
    print(f"{res.testsRun - len(failed) - len(res.skipped)} passed, {len(failed)} failed, {len(res.skipped)} skipped")


if __name__ == "__main__":
    main()
