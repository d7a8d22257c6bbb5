"""LangChain agents over a real daemon: `bind_tools` on ChatOllama and ChatOpenAI, one agent step that
runs a Python function the model called and answers from its result."""
from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool

from daemon_proc import DaemonProc
from tool_models import call, script

ran: list[str] = []


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    ran.append(city)
    return f"{len(city)} C in {city}"


def agent_step(model: Any) -> str:
    """Ask, run every tool the model called, hand the results back, return the final answer."""
    ran.clear()
    bound = model.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage(script("<think>Look it up.</think>" + call("get_weather", city="Trondheim"),
                                               "The weather: [[tool]]."))]
    reply = bound.invoke(messages)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Trondheim"})]
    messages.append(reply)
    for c in reply.tool_calls:
        messages.append(ToolMessage(content=get_weather.invoke(c["args"]), tool_call_id=c["id"]))
    answer = bound.invoke(messages)
    assert not answer.tool_calls
    assert ran == ["Trondheim"]
    return str(answer.content)


def test_chat_ollama_bind_tools_agent_step(tools_daemon: DaemonProc) -> None:
    from langchain_ollama import ChatOllama

    assert agent_step(ChatOllama(model="qwen:tools", base_url=tools_daemon.base_url)) == "The weather: 9 C in Trondheim."


def test_chat_openai_bind_tools_agent_step(tools_daemon: DaemonProc) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="qwen:tools", base_url=tools_daemon.base_url + "/v1", api_key="unused", max_retries=0)  # type: ignore[arg-type]
    assert agent_step(model) == "The weather: 9 C in Trondheim."


def test_chat_openai_streams_the_tool_call(tools_daemon: DaemonProc) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="qwen:tools", base_url=tools_daemon.base_url + "/v1", api_key="unused", max_retries=0,  # type: ignore[arg-type]
                       streaming=True).bind_tools([get_weather])
    merged: Any = None
    for piece in model.stream([HumanMessage(script(call("get_weather", city="Oslo")))]):
        merged = piece if merged is None else merged + piece
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "Oslo"})]
