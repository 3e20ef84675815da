"""Risk and AML (风险控制, 反洗钱): rules from `[risk]` (`rules`), the
screening of each spend inside its booking (`screen`), the cases held or
alerted and the operators' decisions on them (`cases`, and the review in
`telecom_pay/service/risk_review.py`)."""
