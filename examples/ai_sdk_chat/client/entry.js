// What the page uses of the AI SDK: the Chat class that useChat wraps (AbstractChat) and the HTTP transport.
export { AbstractChat, DefaultChatTransport } from "ai";
