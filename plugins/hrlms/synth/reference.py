"""Fixed reference data for the synthetic HR export.

Kept static (not drawn from Faker) so that locations, time zones, departments and the job
catalog are realistic, stable across Faker upgrades, and identical for every seed.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """An office: code written to the export, ISO country, IANA zone, Faker locale for names."""

    code: str
    city: str
    country: str
    time_zone: str
    locale: str
    weight: float


LOCATIONS: tuple[Location, ...] = (
    Location("US-NYC", "New York", "US", "America/New_York", "en_US", 0.10),
    Location("US-SFO", "San Francisco", "US", "America/Los_Angeles", "en_US", 0.08),
    Location("US-SEA", "Seattle", "US", "America/Los_Angeles", "en_US", 0.06),
    Location("US-CHI", "Chicago", "US", "America/Chicago", "en_US", 0.07),
    Location("US-AUS", "Austin", "US", "America/Chicago", "en_US", 0.05),
    Location("US-DEN", "Denver", "US", "America/Denver", "en_US", 0.04),
    Location("GB-LON", "London", "GB", "Europe/London", "en_GB", 0.07),
    Location("GB-MAN", "Manchester", "GB", "Europe/London", "en_GB", 0.03),
    Location("DE-BER", "Berlin", "DE", "Europe/Berlin", "de_DE", 0.05),
    Location("DE-MUC", "Munich", "DE", "Europe/Berlin", "de_DE", 0.03),
    Location("FR-PAR", "Paris", "FR", "Europe/Paris", "fr_FR", 0.05),
    Location("FR-LYS", "Lyon", "FR", "Europe/Paris", "fr_FR", 0.02),
    Location("NO-OSL", "Oslo", "NO", "Europe/Oslo", "no_NO", 0.02),
    Location("IN-BLR", "Bengaluru", "IN", "Asia/Kolkata", "en_IN", 0.09),
    Location("IN-HYD", "Hyderabad", "IN", "Asia/Kolkata", "en_IN", 0.05),
    Location("JP-TYO", "Tokyo", "JP", "Asia/Tokyo", "ja_JP", 0.04),
    Location("SG-SIN", "Singapore", "SG", "Asia/Singapore", "zh_CN", 0.03),
    Location("BR-SAO", "Sao Paulo", "BR", "America/Sao_Paulo", "pt_BR", 0.04),
    Location("AU-SYD", "Sydney", "AU", "Australia/Sydney", "en_AU", 0.02),
    Location("AU-MEL", "Melbourne", "AU", "Australia/Melbourne", "en_AU", 0.02),
)

# Locales whose native script is not Latin: display the native name, derive the login from
# the romanized form. Singapore uses the romanized form as display name (as HR systems there do).
ROMANIZED_DISPLAY: frozenset[str] = frozenset({"zh_CN"})


@dataclass(frozen=True)
class Department:
    """A top-level division: its sub-departments, job family and individual-contributor jobs."""

    name: str
    family: str
    code: str
    weight: float
    subs: tuple[str, ...]
    titles: tuple[str, ...]


DEPARTMENTS: tuple[Department, ...] = (
    Department("Engineering", "Engineering", "ENG", 0.22,
               ("Platform", "Mobile", "Data", "Security", "Quality", "Infrastructure", "Payments", "Search"),
               ("Software Engineer I", "Software Engineer II", "Senior Software Engineer",
                "Staff Software Engineer", "Site Reliability Engineer", "Data Engineer", "QA Analyst")),
    Department("Sales", "Sales", "SAL", 0.14,
               ("Enterprise", "Mid-Market", "SMB", "Sales Operations", "Partnerships"),
               ("Account Executive", "Sales Development Representative", "Account Manager",
                "Sales Engineer", "Sales Operations Analyst")),
    Department("Customer Support", "Customer Service", "CSV", 0.12,
               ("Tier 1", "Tier 2", "Customer Success", "Support Operations"),
               ("Support Specialist", "Senior Support Specialist", "Customer Success Manager",
                "Support Analyst")),
    Department("Operations", "Operations", "OPS", 0.10,
               ("Supply Chain", "Logistics", "Procurement", "Facilities"),
               ("Operations Analyst", "Logistics Coordinator", "Buyer", "Facilities Coordinator")),
    Department("Finance", "Finance", "FIN", 0.06,
               ("Payroll", "Accounting", "Tax", "FP&A", "Treasury"),
               ("Accountant", "Senior Accountant", "Payroll Specialist", "Financial Analyst", "Tax Analyst")),
    Department("Marketing", "Marketing", "MKT", 0.06,
               ("Brand", "Growth", "Content", "Events", "Product Marketing"),
               ("Marketing Specialist", "Content Writer", "Growth Analyst", "Event Manager")),
    Department("Product", "Product", "PRD", 0.07,
               ("Product Management", "Design", "User Research", "Analytics"),
               ("Product Manager", "Senior Product Manager", "Product Designer", "UX Researcher",
                "Data Analyst")),
    Department("Information Technology", "Information Technology", "ITS", 0.06,
               ("Service Desk", "Enterprise Applications", "Networks", "End-User Computing"),
               ("IT Support Technician", "Systems Administrator", "Network Engineer", "Business Systems Analyst")),
    Department("Human Resources", "Human Resources", "HRS", 0.05,
               ("Talent Acquisition", "People Operations", "Learning & Development",
                "Compensation & Benefits", "HR Business Partners"),
               ("Recruiter", "HR Generalist", "Learning Specialist", "Compensation Analyst",
                "HR Business Partner")),
    Department("Legal", "Legal", "LGL", 0.03,
               ("Corporate", "Compliance", "Privacy", "Contracts"),
               ("Counsel", "Senior Counsel", "Compliance Analyst", "Paralegal")),
    Department("Research", "Research", "RND", 0.05,
               ("Applied Science", "Labs", "Prototyping"),
               ("Research Scientist", "Research Engineer", "Lab Technician")),
    Department("Manufacturing", "Manufacturing", "MFG", 0.04,
               ("Assembly", "Quality Control", "Maintenance"),
               ("Production Associate", "Quality Inspector", "Maintenance Technician")),
)

# Heads of units get a management job by depth (1 = company root).
MANAGEMENT_JOBS: tuple[tuple[str, str], ...] = (
    ("EXE001", "Chief Executive Officer"),
    ("MGT010", "Vice President"),
    ("MGT020", "Director"),
    ("MGT030", "Senior Manager"),
    ("MGT040", "Manager"),
)
EXECUTIVE_STAFF_JOBS: tuple[tuple[str, str], ...] = (
    ("EXE010", "Chief of Staff"),
    ("EXE020", "Executive Assistant"),
)
MANAGEMENT_FAMILY = "Management"
EXECUTIVE_FAMILY = "Executive"

# Worker_Status / Worker_Type codes and their canonical values (mapping value_maps).
STATUS_CODES: tuple[str, ...] = ("A", "L", "T", "P")
STATUS_CANONICAL: tuple[str, ...] = ("active", "leave", "terminated", "prehire")
ACTIVE, LEAVE, TERMINATED, PREHIRE = 0, 1, 2, 3
TYPE_CODES: tuple[str, ...] = ("EMP", "CTR", "INT")
TYPE_CANONICAL: tuple[str, ...] = ("employee", "contractor", "intern")
TYPE_WEIGHTS: tuple[float, ...] = (0.88, 0.10, 0.02)

COMPANY_NAME = "Example Corp"
EMAIL_DOMAIN = "example.com"
