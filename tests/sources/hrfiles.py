"""Small hand-made HR files in the synthetic export's format (for tests that need exact control)."""
from __future__ import annotations

from hrlms.settings import DEFAULT_MAPPING
from hrlms.sources.mapping import load_mapping

MAPPING = load_mapping(DEFAULT_MAPPING)
WORKERS = MAPPING.entity("workers")
HEADER = list(WORKERS.columns.values())


def worker(i: int, **over: str) -> dict[str, str]:
    row = {
        "Employee_ID": f"P{i:07d}", "Employee_Number": str(100000 + i), "First_Name": f"First{i}",
        "Last_Name": f"Last{i}", "Preferred_Name": "", "Work_Email": f"user{i}@example.com",
        "Login": f"user{i}", "Worker_Status": "A", "Worker_Type": "EMP", "Hire_Date": "01/15/2020",
        "Start_Date": "01/15/2020", "Termination_Date": "", "Last_Day_Of_Work": "", "Job_Code": "J100",
        "Job_Title": "Analyst", "Job_Family": "FIN", "Org_Unit": "ORG0001", "Manager_ID": "",
        "Location": "LON", "Country": "GB", "Time_Zone": "Europe/London",
    }
    row.update(over)
    return row


def csv_text(rows: list[dict[str, str]], header: list[str] | None = None, delimiter: str = ",",
             newline: str = "\n") -> str:
    import csv
    import io

    header = header or HEADER
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator=newline)
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(h, "") for h in header])
    return buf.getvalue()


ORG_CSV = ("Org_Code,Org_Name,Parent_Org_Code,Org_Type,Org_Status\n"
           "ORG0001,Company,,company,ACTIVE\nORG0002,Finance,ORG0001,department,ACTIVE\n")
