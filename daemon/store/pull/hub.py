"""The hub's metadata through `huggingface_hub`: the commit a name resolves to and its files with their digests.

Everything is read at one commit, so a push to the repo during a pull never mixes two versions. The
endpoint (`HF_ENDPOINT`, a mirror or a test server) and the token (`HF_TOKEN`) are read per pull.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from urllib.parse import quote

from rk.daemon.errors import RkError
from rk.daemon.store.pull.refs import Digest, HubRef, RepoFile

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubConfig:
    endpoint: str
    token: str | None

    @classmethod
    def from_env(cls) -> HubConfig:
        return cls((os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"), os.environ.get("HF_TOKEN") or None)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def file_url(self, repo: str, commit: str, path: str) -> str:
        """`{endpoint}/{repo}/resolve/{commit}/{path}`: the hub answers it, often by a redirect to its CDN."""
        return f"{self.endpoint}/{repo}/resolve/{commit}/{quote(path)}"


@dataclass(frozen=True)
class Listing:
    commit: str
    files: tuple[RepoFile, ...]


def _list(cfg: HubConfig, ref: HubRef) -> Listing:
    """Blocking: the repo's head commit, then its file tree at that commit (sizes and digests)."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile as HubFile

    api = HfApi(endpoint=cfg.endpoint, token=cfg.token or False)
    try:
        commit = api.model_info(ref.repo, revision="main").sha
        if not commit:
            raise RkError("hub_unavailable", f"{cfg.endpoint} gave no commit for {ref.repo}")
        files = []
        for entry in api.list_repo_tree(ref.repo, revision=commit, recursive=True):
            if not isinstance(entry, HubFile):
                continue  # a folder
            lfs = entry.lfs
            digest = Digest("sha256", lfs.sha256) if lfs is not None else Digest("git", entry.blob_id)
            files.append(RepoFile(entry.path, int(entry.size), digest))
    except GatedRepoError:
        raise RkError("bad_request", f"hf.co/{ref.repo} is gated: accept its terms on the hub and set HF_TOKEN "
                      "for the daemon", param="model") from None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise RkError("model_not_found", f"pull model manifest: file does not exist: no repo hf.co/{ref.repo} on "
                      f"{cfg.endpoint} (or it is private: set HF_TOKEN)", param="model") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise RkError("hub_unavailable", f"the hub at {cfg.endpoint} answered {status} for {ref.repo}") from None
    except (httpx2.HTTPError, OSError) as e:  # refused, DNS, timeouts: the hub library's transport errors
        raise RkError("hub_unavailable", f"cannot reach the hub at {cfg.endpoint}: {e}") from None
    return Listing(commit, tuple(files))


async def list_files(cfg: HubConfig, ref: HubRef) -> Listing:
    return await asyncio.to_thread(_list, cfg, ref)
