"""The gate's verdict as JUnit XML: one test case per rule, for Jenkins' ``junit`` step and
GitHub's test reporters (a failed rule is a failure whose message gives value and threshold)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from mlci.evaluation.gate import describe, rule_label
from mlci.fileio import write_bytes


def gate_junit(result: dict, path: Path) -> None:
    rules = result["rules"]
    failures = sum(not r["passed"] for r in rules)
    skipped = sum(r.get("evaluated") is False for r in rules)
    suites = ET.Element("testsuites", name="mlci", tests=str(len(rules)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="mlci.gate", tests=str(len(rules)),
                          failures=str(failures), errors="0", skipped=str(skipped), timestamp=result["evaluated_at"])
    for rule in rules:
        case = ET.SubElement(suite, "testcase", classname="mlci.gate", name=rule_label(rule), time="0")
        message = describe(rule)
        if rule.get("evaluated") is False:
            ET.SubElement(case, "skipped", message=rule["note"])
        elif not rule["passed"]:
            ET.SubElement(case, "failure", message=message, type="GateRuleFailed").text = message
        else:
            ET.SubElement(case, "system-out").text = message
    ET.indent(suites)
    write_bytes(path, ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n")
