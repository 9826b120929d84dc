"""Resolution against the caller's catalog: which project and environment a request means.

A request that cannot be resolved becomes one question naming exactly what is missing and
offering the choices.
"""

from __future__ import annotations

from rapidfuzz.distance import DamerauLevenshtein
from rapidfuzz.process import extractOne

from agent.language import say
from agent.planner import Catalog
from agent.rules.parse import CatalogNames, Parsed
from agent.rules.vocabulary import ENVIRONMENT_SYNONYMS


class Question(Exception):
    """A request needs one more answer from the user; the message is the question."""


def names_of(catalog: Catalog) -> CatalogNames:
    """Every project, service and environment name in the catalog."""
    return CatalogNames(
        projects=sorted(catalog.services),
        services=sorted({s for names in catalog.services.values() for s in names}),
        environments=sorted({e for envs in catalog.environments.values() for e in envs}),
    )


def known_services(catalog: Catalog, projects: list[str] | None = None) -> str:
    """The services to offer in a question (of `projects`, else all)."""
    pool = projects or sorted(catalog.services)
    return ", ".join(sorted({s for p in pool for s in catalog.services.get(p, [])}))


def closest(word: str, options: list[str]) -> str | None:
    """The option `word` is most likely a typo of, if any is close."""
    best = extractOne(word, options, scorer=DamerauLevenshtein.distance, score_cutoff=3)
    return str(best[0]) if best else None


CANONICAL = {w: env for env, words in ENVIRONMENT_SYNONYMS.items() for w in words}


def env_in(known: list[str], wanted: str) -> str | None:
    """The project's own name for environment `wanted` ("prod" is its "production")."""
    if wanted in known:
        return wanted
    same = [k for k in known if CANONICAL.get(k, k) == CANONICAL.get(wanted, wanted)]
    return same[0] if len(same) == 1 else None


def project(parsed: Parsed, catalog: Catalog, services: list[str] | None = None) -> str:
    """The one project the request is about, or a Question."""
    if len(parsed.projects) == 1:
        return parsed.projects[0]
    if len(parsed.projects) > 1:
        raise Question(say("several_projects", parsed.lang, projects=", ".join(parsed.projects)))
    named = services if services is not None else [s for s, _ in parsed.services]
    candidates: set[str] | None = None
    for service in dict.fromkeys(named):
        owners = set(catalog.projects_of(service))
        candidates = owners if candidates is None else (candidates & owners or candidates | owners)
    if candidates is not None and parsed.environments:
        with_env = {
            p for p in candidates if env_in(catalog.environments[p], parsed.environments[0])
        }
        if len(with_env) == 1:  # "gateway in qa": only one owner has a qa
            candidates = with_env
    if candidates and len(candidates) == 1:
        return next(iter(candidates))
    if candidates:
        first = next((s for s in named if len(catalog.projects_of(s)) > 1), None)
        if first is None:  # "web and gateway": each is one project's, and they differ
            projects = ", ".join(sorted(candidates))
            raise Question(say("several_projects", parsed.lang, projects=projects))
        raise Question(
            say(
                "which_project_of_service",
                parsed.lang,
                service=first,
                projects=", ".join(sorted(candidates)),
            )
        )
    if len(catalog.services) == 1:
        return next(iter(catalog.services))
    if parsed.environments:
        having = [
            p
            for p in sorted(catalog.services)
            if env_in(catalog.environments[p], parsed.environments[0])
        ]
        if len(having) == 1:
            return having[0]
    raise Question(say("which_project", parsed.lang, projects=", ".join(sorted(catalog.services))))


def environment(parsed: Parsed, catalog: Catalog, name: str, which: int = 0) -> str:
    """The environment of project `name` the request means, or a Question."""
    known = catalog.environments.get(name, [])
    if parsed.environments:
        wanted = parsed.environments[which]
        own = env_in(known, wanted)
        if own:
            return own
        raise Question(
            say(
                "no_such_environment",
                parsed.lang,
                project=name,
                environment=wanted,
                environments=", ".join(known),
            )
        )
    if len(known) == 1:
        return known[0]
    if parsed.unknown_environment:
        raise Question(
            say(
                "no_such_environment",
                parsed.lang,
                project=name,
                environment=parsed.unknown_environment,
                environments=", ".join(known),
            )
        )
    raise Question(
        say("which_environment", parsed.lang, project=name, environments=", ".join(known))
    )


def targets(
    parsed: Parsed, catalog: Catalog, services: list[str] | None = None
) -> list[tuple[str, str]]:
    """Every (project, environment) the request names: "to staging and prod" is two."""
    name = project(parsed, catalog, services)
    if parsed.everywhere and not parsed.environments:
        return [(name, env) for env in catalog.environments.get(name, [])]
    if len(parsed.environments) <= 1:
        return [(name, environment(parsed, catalog, name))]
    return [(name, environment(parsed, catalog, name, i)) for i in range(len(parsed.environments))]
