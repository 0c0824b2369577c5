# meterseal.fraud_rules: cheating detectors over verified records (CPython only).
