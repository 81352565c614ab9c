"""Seed a new database with what an installation starts with: the roles, the six policies,
ladder version 1 and the queues. The values are frozen here as they were when this migration was
written; reviews/policies/defaults.py holds the live defaults (tests check the two agree for a
new database, so a change there needs a new migration)."""

from django.db import migrations

ROLES = ('moderator', 'appeals', 'qa_lead', 'policy_admin', 'detection_tier')
SENIOR_GROUP = 'senior_moderator'
# code, name, severity (1-5), SLA hours, guideline
POLICIES = [('human_trafficking',
  'Human trafficking',
  5,
  1,
  'Listings that offer, recruit or advertise people for exploitation, forced labour or sex work, including '
  "coded job offers with travel and housing 'included' and identity documents held."),
 ('firearms',
  'Firearms and weapons',
  5,
  4,
  'Real firearms, their parts (receivers, barrels, auto sears), ammunition, and 3D-print files. Not '
  'violating: water guns, toy blasters, airsoft with orange tips where legal, holsters, power tools such as '
  'nail guns.'),
 ('drugs',
  'Drugs and paraphernalia',
  4,
  4,
  'Controlled substances, prescription drugs without a prescription channel, and obfuscated offers of them '
  '(emoji codes, misspellings). Not violating: legal supplements, kitchen herbs.'),
 ('stolen_goods',
  'Stolen goods',
  3,
  12,
  "Items offered with signs of theft: locked or blacklisted devices, removed serial numbers, 'no box no "
  "questions', far below market price with urgency."),
 ('scam',
  'Scams and fraud',
  3,
  8,
  'Listings that take payment without delivering: off-platform payment demands, advance fees, fake tickets, '
  'impossible prices, copied photos.'),
 ('counterfeit',
  'Counterfeit goods',
  2,
  24,
  "Replicas of branded goods ('AAA quality', 'mirror copy', '1:1'), fake certificates of authenticity. Not "
  'violating: genuine second-hand branded goods, unbranded look-alikes.')]
LADDER_V1 = {'human_trafficking': {'monitor': 0.3,
                       'review': 0.5,
                       'llm_verify': 0.7,
                       'warn': 0.95,
                       'remove': 0.95,
                       'suspend': 0.99,
                       'llm_min_confidence': 0.8,
                       'qa_rate': 0.1,
                       'severity': 5,
                       'sla_hours': 1},
 'firearms': {'monitor': 0.3,
              'review': 0.5,
              'llm_verify': 0.7,
              'warn': 0.95,
              'remove': 0.95,
              'suspend': 0.99,
              'llm_min_confidence': 0.8,
              'qa_rate': 0.1,
              'severity': 5,
              'sla_hours': 4},
 'drugs': {'monitor': 0.3,
           'review': 0.5,
           'llm_verify': 0.7,
           'warn': 0.95,
           'remove': 0.95,
           'suspend': 0.99,
           'llm_min_confidence': 0.8,
           'qa_rate': 0.1,
           'severity': 4,
           'sla_hours': 4},
 'stolen_goods': {'monitor': 0.3,
                  'review': 0.5,
                  'llm_verify': 0.7,
                  'warn': 0.95,
                  'remove': 0.95,
                  'suspend': 0.99,
                  'llm_min_confidence': 0.8,
                  'qa_rate': 0.1,
                  'severity': 3,
                  'sla_hours': 12},
 'scam': {'monitor': 0.3,
          'review': 0.5,
          'llm_verify': 0.7,
          'warn': 0.95,
          'remove': 0.95,
          'suspend': 0.99,
          'llm_min_confidence': 0.8,
          'qa_rate': 0.1,
          'severity': 3,
          'sla_hours': 8},
 'counterfeit': {'monitor': 0.3,
                 'review': 0.5,
                 'llm_verify': 0.7,
                 'warn': 0.95,
                 'remove': 0.95,
                 'suspend': 0.99,
                 'llm_min_confidence': 0.8,
                 'qa_rate': 0.1,
                 'severity': 2,
                 'sla_hours': 24}}
# slug, name, kind, policies, roles, groups
QUEUES = [('all', 'All policies', 'review', [], ['moderator'], []),
 ('high-harm',
  'High harm: trafficking and firearms',
  'review',
  ['human_trafficking', 'firearms'],
  ['moderator'],
  []),
 ('drugs', 'Drugs', 'review', ['drugs'], ['moderator'], []),
 ('goods', 'Counterfeit and stolen goods', 'review', ['counterfeit', 'stolen_goods'], ['moderator'], []),
 ('scam', 'Scams', 'review', ['scam'], ['moderator'], []),
 ('escalations',
  'Escalations and suspensions (senior)',
  'escalation',
  [],
  ['moderator'],
  ['senior_moderator'])]


def seed(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Policy = apps.get_model("reviews", "Policy")
    LadderVersion = apps.get_model("reviews", "LadderVersion")
    Queue = apps.get_model("reviews", "Queue")
    for role in (*ROLES, SENIOR_GROUP):
        Group.objects.get_or_create(name=role)
    for code, name, severity, sla_hours, guideline in POLICIES:
        Policy.objects.update_or_create(
            code=code, defaults={"name": name, "severity": severity, "sla_hours": sla_hours, "guideline": guideline}
        )
    if not LadderVersion.objects.exists():
        LadderVersion.objects.create(
            version=1, state="published", thresholds=LADDER_V1, notes="defaults from the seeds", is_active=True
        )
    for position, (slug, name, kind, policies, roles, groups) in enumerate(QUEUES):
        Queue.objects.update_or_create(
            slug=slug,
            defaults={"name": name, "kind": kind, "policies": policies, "roles": roles, "groups": groups,
                      "position": position},
        )


class Migration(migrations.Migration):
    dependencies = [
        ("reviews", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
