package dev.distillery.runtime.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;

import dev.distillery.kernels.DType;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;

/**
 * A memory-mapped safetensors file, validated exactly against the spec before any tensor is
 * handed out: an 8-byte little-endian header length, a UTF-8 JSON header (a map from tensor name
 * to {@code dtype}, {@code shape}, {@code data_offsets}, plus an optional {@code __metadata__}
 * string map), then the byte buffer. Offsets are relative to the buffer, must cover it exactly
 * (no holes, no overlaps) and must match dtype × shape. Nothing is read onto the heap but the
 * header; tensors are views of the mapping and stay valid until {@link #close()}.
 */
public final class SafetensorsFile implements AutoCloseable {

    /** The spec's cap on the header, which also keeps a corrupt length from allocating gigabytes. */
    public static final long MAX_HEADER_BYTES = 100L * 1024 * 1024;

    /** One entry of the header; {@code begin} and {@code end} are offsets into the byte buffer. */
    public record Entry(String name, DType dtype, int[] shape, long begin, long end) {
        public long byteSize() {
            return end - begin;
        }
    }

    private static final ObjectMapper JSON = JsonMapper.builder()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION).build();

    private final Path path;
    private final Arena arena;
    private final MemorySegment buffer;
    private final Map<String, Entry> entries;
    private final Map<String, String> metadata;
    private final long headerBytes;

    private SafetensorsFile(Path path, Arena arena, MemorySegment buffer, Map<String, Entry> entries,
                            Map<String, String> metadata, long headerBytes) {
        this.path = path;
        this.arena = arena;
        this.buffer = buffer;
        this.entries = entries;
        this.metadata = metadata;
        this.headerBytes = headerBytes;
    }

    /** Opens, validates and maps {@code path}. */
    public static SafetensorsFile open(Path path) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long fileSize = ch.size();
            if (fileSize < 8) {
                throw new SafetensorsFormatException(path, "file is " + fileSize + " bytes, shorter than the 8-byte header length");
            }
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0);
            long headerLen = lenBuf.flip().getLong();
            if (headerLen < 2 || headerLen > MAX_HEADER_BYTES || headerLen > fileSize - 8) {
                throw new SafetensorsFormatException(path, "header length " + Long.toUnsignedString(headerLen)
                        + " at offset 0 does not fit: the file has " + (fileSize - 8) + " bytes after the length field"
                        + " (and the spec caps headers at " + MAX_HEADER_BYTES + ")");
            }
            ByteBuffer headerBuf = ByteBuffer.allocate((int) headerLen);
            readFully(ch, headerBuf, 8);
            String header;
            try {
                header = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(headerBuf.array())).toString();
            } catch (CharacterCodingException e) {
                throw new SafetensorsFormatException(path, "header is not valid UTF-8 (tensor names and metadata must be)");
            }
            long dataStart = 8 + headerLen;
            long dataLen = fileSize - dataStart;

            Map<String, String> metadata = new LinkedHashMap<>();
            List<Entry> list = parseHeader(path, header, metadata);
            validateLayout(path, list, dataLen, dataStart);

            Map<String, Entry> byName = new LinkedHashMap<>();
            for (Entry e : list) byName.put(e.name(), e);
            Arena arena = Arena.ofShared();
            MemorySegment mapped;
            try {
                mapped = ch.map(FileChannel.MapMode.READ_ONLY, dataStart, dataLen, arena);
            } catch (IOException | RuntimeException e) {
                arena.close();
                throw e;
            }
            return new SafetensorsFile(path, arena, mapped, Collections.unmodifiableMap(byName),
                    Collections.unmodifiableMap(metadata), headerLen);
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long position) throws IOException {
        long pos = position;
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos);
            if (n < 0) throw new IOException("unexpected end of file at offset " + pos);
            pos += n;
        }
    }

    private static List<Entry> parseHeader(Path path, String header, Map<String, String> metadata) throws SafetensorsFormatException {
        JsonNode root;
        try {
            root = JSON.readTree(header);
        } catch (JsonProcessingException e) {
            throw new SafetensorsFormatException(path, "header is not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new SafetensorsFormatException(path, "header must be a JSON object, got " + (root == null ? "nothing" : root.getNodeType()));
        }
        List<Entry> list = new ArrayList<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> field = it.next();
            String name = field.getKey();
            JsonNode node = field.getValue();
            if (name.equals("__metadata__")) {
                if (!node.isObject()) throw new SafetensorsFormatException(path, "__metadata__ must be an object of strings");
                for (Iterator<Map.Entry<String, JsonNode>> m = node.fields(); m.hasNext(); ) {
                    Map.Entry<String, JsonNode> kv = m.next();
                    if (!kv.getValue().isTextual()) {
                        throw new SafetensorsFormatException(path, "__metadata__ value of '" + kv.getKey() + "' is not a string");
                    }
                    metadata.put(kv.getKey(), kv.getValue().textValue());
                }
                continue;
            }
            list.add(parseEntry(path, name, node));
        }
        return list;
    }

    private static Entry parseEntry(Path path, String name, JsonNode node) throws SafetensorsFormatException {
        String where = "tensor '" + name + "': ";
        if (!node.isObject()) throw new SafetensorsFormatException(path, where + "entry is not an object");
        JsonNode dtypeNode = node.get("dtype"), shapeNode = node.get("shape"), offsets = node.get("data_offsets");
        if (dtypeNode == null || !dtypeNode.isTextual()) throw new SafetensorsFormatException(path, where + "missing string 'dtype'");
        if (shapeNode == null || !shapeNode.isArray()) throw new SafetensorsFormatException(path, where + "missing array 'shape'");
        if (offsets == null || !offsets.isArray() || offsets.size() != 2) {
            throw new SafetensorsFormatException(path, where + "'data_offsets' must be [begin, end]");
        }
        DType dtype;
        try {
            dtype = DType.fromSafetensors(dtypeNode.textValue());
        } catch (IllegalArgumentException e) {
            throw new SafetensorsFormatException(path, where + e.getMessage());
        }
        int[] shape = new int[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = shapeNode.get(i);
            if (!d.canConvertToInt() || !d.isIntegralNumber() || d.intValue() < 0) {
                throw new SafetensorsFormatException(path, where + "shape entry " + i + " is not a non-negative int: " + d);
            }
            shape[i] = d.intValue();
        }
        for (int i = 0; i < 2; i++) {
            JsonNode o = offsets.get(i);
            if (!o.isIntegralNumber() || !o.canConvertToLong() || o.longValue() < 0) {
                throw new SafetensorsFormatException(path, where + "data_offsets[" + i + "] is not a non-negative integer: " + o);
            }
        }
        long begin = offsets.get(0).longValue(), end = offsets.get(1).longValue();
        if (end < begin) throw new SafetensorsFormatException(path, where + "data_offsets end " + end + " is before begin " + begin);
        long expected;
        try {
            expected = Math.multiplyExact(Tensor.numel(shape), dtype.bytes());
        } catch (IllegalArgumentException | ArithmeticException e) {
            throw new SafetensorsFormatException(path, where + dtype.safetensorsName() + " " + Arrays.toString(shape)
                    + " would need more than 2^63 bytes");
        }
        if (end - begin != expected) {
            throw new SafetensorsFormatException(path, where + "data_offsets [" + begin + ", " + end + ") hold " + (end - begin)
                    + " bytes but " + dtype.safetensorsName() + " " + Arrays.toString(shape) + " needs " + expected);
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /** Sorted by begin, entries must tile [0, dataLen) exactly. */
    private static void validateLayout(Path path, List<Entry> list, long dataLen, long dataStart) throws SafetensorsFormatException {
        List<Entry> sorted = new ArrayList<>(list);
        sorted.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long cursor = 0;
        for (Entry e : sorted) {
            if (e.end() > dataLen) {
                throw new SafetensorsFormatException(path, "tensor '" + e.name() + "': data_offsets [" + e.begin() + ", " + e.end()
                        + ") end past the file (the byte buffer is " + dataLen + " bytes, starting at file offset " + dataStart + ")");
            }
            if (e.begin() < cursor) {
                throw new SafetensorsFormatException(path, "tensor '" + e.name() + "': data_offsets [" + e.begin() + ", " + e.end()
                        + ") overlap the previous tensor, which ends at " + cursor);
            }
            if (e.begin() > cursor) {
                throw new SafetensorsFormatException(path, "hole in the byte buffer: bytes [" + cursor + ", " + e.begin()
                        + ") before tensor '" + e.name() + "' belong to no tensor");
            }
            cursor = e.end();
        }
        if (cursor != dataLen) {
            throw new SafetensorsFormatException(path, "the byte buffer has " + dataLen + " bytes but the tensors cover only "
                    + cursor + " (trailing bytes belong to no tensor)");
        }
    }

    public Path path() {
        return path;
    }

    /** The file's size when it was opened: the length field, the header and the mapped data. */
    public long fileSize() {
        return 8 + headerBytes + buffer.byteSize();
    }

    public Map<String, Entry> entries() {
        return entries;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    public long headerBytes() {
        return headerBytes;
    }

    public boolean contains(String name) {
        return entries.containsKey(name);
    }

    /** The tensor's bytes, mapped; valid until close. */
    public MemorySegment bytes(String name) {
        Entry e = entry(name);
        return buffer.asSlice(e.begin(), e.byteSize());
    }

    /** A read-only tensor view of the mapping. */
    public Tensor tensor(String name) {
        Entry e = entry(name);
        return new Tensor(name, e.shape(), e.dtype(), Device.CPU, buffer.asSlice(e.begin(), e.byteSize()), false);
    }

    /** @throws IllegalArgumentException naming the file and the tensor when it is absent */
    public Entry entry(String name) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new IllegalArgumentException(path + ": no tensor named '" + name + "' (has " + entries.keySet() + ")");
        }
        return e;
    }

    @Override
    public void close() {
        arena.close();
    }
}
