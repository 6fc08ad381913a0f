"""Domain errors with a status and our rule code; the API turns them into OperationOutcomes."""


class DomainError(Exception):
    def __init__(self, status: int, rule: str, message: str, path: str = "") -> None:
        self.status = status
        self.rule = rule
        self.path = path
        super().__init__(message)
