"""The event-stream reader follows the HTML standard's parsing rules, whatever the chunking."""

from __future__ import annotations

from txt2img_client._sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events, decoder


class TestSSEDecoder:
    def test_the_service_stream(self) -> None:
        """retry, comments, ids and typed events, as the service sends them."""
        events, decoder = decode(
            b"retry: 2000\n\n",
            b'id: 100000\nevent: progress\ndata: {"progress": 0}\n\n',
            b": keep-alive\n\n",
            b'id: 200000\nevent: status\ndata: {"status": "succeeded"}\n\n',
        )
        assert events == [
            ServerSentEvent("progress", '{"progress": 0}', "100000"),
            ServerSentEvent("status", '{"status": "succeeded"}', "200000"),
        ]
        assert (decoder.retry_ms, decoder.last_event_id) == (2000, "200000")

    def test_every_line_ending_and_chunk_boundary(self) -> None:
        """CRLF, LF and CR end lines, also when a CRLF is split between two chunks."""
        stream = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n"
        whole, _ = decode(stream)
        byte_by_byte, _ = decode(*(stream[i : i + 1] for i in range(len(stream))))
        expected = [
            ServerSentEvent("a", "1", ""),
            ServerSentEvent("b", "2", ""),
            ServerSentEvent("message", "3", ""),
        ]
        assert whole == byte_by_byte == expected

    def test_a_cr_lf_split_across_chunks_is_one_line_ending(self) -> None:
        events, _ = decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
        assert events == [ServerSentEvent("message", "a\nb", "")]

    def test_data_lines_join_and_only_one_leading_space_goes(self) -> None:
        events, _ = decode(b"data:  two spaces\ndata:none\ndata\n\n")
        assert events == [ServerSentEvent("message", " two spaces\nnone\n", "")]

    def test_unicode_line_separators_inside_data_split_nothing(self) -> None:
        """U+2028 and friends are no line endings here (str.splitlines would split on them)."""
        text = '{"prompt": "a\u2028b\u2029c\x85d\x0be"}'
        events, _ = decode(f"data: {text}\n\n".encode())
        assert [event.data for event in events] == [text]

    def test_utf8_split_between_chunks(self) -> None:
        encoded = "data: phare à l'aube 🌅\n\n".encode()
        events, _ = decode(*(encoded[i : i + 1] for i in range(len(encoded))))
        assert events[0].data == "phare à l'aube 🌅"

    def test_a_byte_order_mark_at_the_start_is_skipped(self) -> None:
        events, _ = decode(b"\xef\xbb\xbfdata: x\n\n")
        assert events == [ServerSentEvent("message", "x", "")]

    def test_an_event_without_data_is_not_dispatched_but_its_id_is_kept(self) -> None:
        events, decoder = decode(b"id: 7\nevent: progress\n\ndata: later\n\n")
        assert events == [ServerSentEvent("message", "later", "7")]
        assert decoder.last_event_id == "7"

    def test_ids_with_nul_and_bad_retry_values_are_ignored(self) -> None:
        _, decoder = decode(b"id: 5\n\nid: 6\x00\nretry: 1.5\nretry: x\n\n")
        assert (decoder.last_event_id, decoder.retry_ms) == ("5", None)

    def test_an_unterminated_event_at_the_end_is_dropped(self) -> None:
        events, _ = decode(b"data: complete\n\ndata: cut off\n")
        assert [event.data for event in events] == ["complete"]

    def test_the_id_of_an_unfinished_event_is_not_the_last_event_id(self) -> None:
        _, decoder = decode(b"id: 3\ndata: a\n\nid: 4\ndata: cut off")
        assert decoder.last_event_id == "3"

    def test_a_reconnected_decoder_forgets_the_half_event_and_keeps_id_and_retry(self) -> None:
        _, decoder = decode(b"retry: 0\nid: 3\n\nid: 9\ndata: half")
        fresh = decoder.reconnected()
        assert (fresh.last_event_id, fresh.retry_ms) == ("3", 0)
        assert fresh.feed(b"data: new\n\n") == [ServerSentEvent("message", "new", "3")]
