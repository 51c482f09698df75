#!/usr/bin/env python3
"""Validates OCSF alerts (one JSON object per line on standard input) with
py-ocsf-models, and prints, per rule, the fields the models rejected, as JSON:
{"RULE": {"class_uid": N, "count": N, "errors": ["device.ip: Field required", ...]}}.

py-ocsf-models 0.10 models Detection (2004) and Compliance (2003) Findings,
not Vulnerability Findings (2002): those are reported with "unmodelled".
"""

import json
import sys

from py_ocsf_models.events.findings.compliance_finding import ComplianceFinding
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from pydantic import ValidationError

MODELS = {2003: ComplianceFinding, 2004: DetectionFinding}

report = {}
for line in sys.stdin:
    if not line.strip():
        continue
    alert = json.loads(line)
    rule = alert["finding_info"]["types"][0]
    entry = report.setdefault(rule, {"class_uid": alert["class_uid"], "count": 0, "errors": []})
    entry["count"] += 1
    model = MODELS.get(alert["class_uid"])
    if model is None:
        entry["unmodelled"] = True
        continue
    try:
        model.model_validate(alert)
    except ValidationError as error:
        for problem in error.errors():
            text = ".".join(str(part) for part in problem["loc"]) + ": " + problem["msg"]
            if text not in entry["errors"]:
                entry["errors"].append(text)
for entry in report.values():
    entry["errors"].sort()
print(json.dumps(report, sort_keys=True))
