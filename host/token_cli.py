"""`meterseal token`: who may use the REST API (docs/api.md, "Tokens").

    meterseal token issue --name zhang.min --role officer    # prints the new token, once
    meterseal token list

Tokens live in the file `meterseal serve` reads: api-tokens.json in the data directory, or the
file --tokens names. Only each token's SHA-256 is kept, so the printed token cannot be shown
again; a lost one is replaced by issuing a new one under another name.
"""

from meterseal.host import cli_store, serve
from meterseal.host.api_tokens import TokenBook
from meterseal.host.storage import USER_ROLES


def _issue(args):
    path = serve.tokens_file(args.db, args.tokens)
    if not path.parent.is_dir():
        raise serve.ServeError(f"no directory {path.parent} for the tokens file")
    book = TokenBook.load(path) if path.exists() else TokenBook()
    try:
        token = book.issue(args.name, args.role)
    except ValueError as exc:
        raise serve.ServeError(str(exc))
    book.save(path)
    print(token)
    return 0


def _list(args):
    path = serve.tokens_file(args.db, args.tokens)
    if not path.exists():
        raise serve.ServeError(f"no tokens file at {path}")
    for principal in sorted(TokenBook.load(path).principals(), key=lambda p: p.name):
        print(f"{principal.name}\t{principal.role}")
    return 0


def add_parser(sub):
    parser = sub.add_parser("token", help="issue or list REST API tokens")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    issue = actions.add_parser("issue", help="add a user and print their new token once")
    issue.add_argument("--name", required=True, help="the user the token acts as")
    issue.add_argument("--role", required=True, choices=USER_ROLES)
    issue.set_defaults(run=_issue)
    listing = actions.add_parser("list", help="the users who hold a token, with their roles")
    listing.set_defaults(run=_list)
    for action in (issue, listing):
        cli_store.add_db_option(action)
        action.add_argument("--tokens", help=f"the tokens file (default DB_DIR/{serve.TOKENS_FILE})")
