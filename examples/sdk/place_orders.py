"""Place N orders (each in its own transaction) and print the shop's totals.

python place_orders.py 100
"""

from __future__ import annotations

import os
import random
import sys

from shop import Base, place_order, totals
from sqlalchemy import create_engine
from sqlalchemy.orm import Session


def main() -> None:
    url = os.environ.get("HEADWATER_DATABASE_URL", "sqlite:///.headwater/headwater.db")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    Base.metadata.create_all(engine)  # the shop's own tables, next to headwater's
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 10):
        with Session(engine) as session, session.begin():
            place_order(session, random.choice(["ada", "grace", "linus"]), random.randint(1, 9999))
    with Session(engine) as session:
        print(totals(session))


if __name__ == "__main__":
    main()
